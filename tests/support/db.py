"""Database helpers for tests."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def hold_write_lock(db_path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on the database: nobody else can commit meanwhile."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def connect(directory: Any) -> sqlite3.Connection:
    """A plain sqlite3 connection to a ``Directory``'s database file."""
    return sqlite3.connect(str(directory.engine.url.database))


def row_counts(directory: Any) -> dict[str, int]:
    """Rows in every table of the database (directory, change feed, audit log, the rest)."""
    conn = connect(directory)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # noqa: S608
            for t in tables
        }
    finally:
        conn.close()
