"""The embedded audit sink: SQLite in WAL mode with ``synchronous=FULL``.

It uses the ``sqlite3`` driver directly rather than SQLAlchemy: this is the one write on the
hot path, and the driver's ``executemany`` + ``commit`` is the whole job. The table itself
is created by the Alembic migrations like every other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from garrison.audit.events import AuditEvent
from garrison.store.db import apply_sqlite_pragmas

# The audit writer gives up on a locked database sooner than directory writers do, so a
# stuck lock turns into refused calls (503) well inside the caller's append timeout.
AUDIT_SQLITE_BUSY_TIMEOUT_MS = 1000

_INSERT = (
    "INSERT INTO audit_events (at, name, request_id, principal_id, credential_id, model, record)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqliteAuditSink:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Nothing to do here: the connection is opened lazily in the writer thread."""

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            apply_sqlite_pragmas(conn, AUDIT_SQLITE_BUSY_TIMEOUT_MS)
            self._conn = conn
        return self._conn

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        conn = self._connection()
        rows = [
            (e.at, e.name.value, e.request_id, e.principal_id, e.credential_id, e.model, e.encode())
            for e in events
        ]
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
