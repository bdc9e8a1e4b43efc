"""Database helpers for tests."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from garrison.audit.pg_sink import AUDIT_PG_WRITE_LOCK, libpq_url
from garrison.store import sqlite_path


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


@contextlib.contextmanager
def hold_audit_lock(database_url: str) -> Iterator[None]:
    """Hold the audit log's write lock: no audit batch can commit meanwhile (SQLite: the
    database's write lock; PostgreSQL: the audit writers' advisory lock, held by a session)."""
    path = sqlite_path(database_url)
    if path is not None:
        with hold_write_lock(path):
            yield
        return
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (AUDIT_PG_WRITE_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (AUDIT_PG_WRITE_LOCK,))
