"""The embedded audit sink: SQLite (WAL, ``synchronous=FULL``) under the shared recipe of
``garrison.audit.tree_sink`` (which says what one batch transaction does).

It uses the ``sqlite3`` driver directly rather than SQLAlchemy: this is the one write on the
hot path, and the driver's multi-row ``INSERT`` + ``COMMIT`` is the whole job. The tables
themselves are created by the Alembic migrations like every other. The log's one write lock
is SQLite's own: each batch begins with ``BEGIN IMMEDIATE``.

Who integrates the outbox is in ``garrison.audit.outbox``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from garrison.audit.exporters import Exporter
from garrison.audit.leaves import SQLITE
from garrison.audit.tree_sink import TreeSink, integrate_with
from garrison.private_files import prepare_sqlite_file
from garrison.store.db import apply_sqlite_pragmas, truncate_wal

log = logging.getLogger("garrison.audit")

# The writer gives up on a locked database sooner than directory writers do, so a stuck
# lock turns into refused calls (503) well inside the caller's append timeout.
AUDIT_SQLITE_BUSY_TIMEOUT_MS = 1000

# Prepared statements the audit connection keeps (the driver's LRU cache, default 128): the
# ten INSERT shapes, the capture and checkpoint inserts and the fold, probe and checkpoint
# reads, with room to spare. A bound on memory whatever statement shapes turn up.
AUDIT_CACHED_STATEMENTS = 32


class SqliteAuditSink(TreeSink[Path]):
    """The log in the SQLite database file at its target."""

    dialect = SQLITE
    _db_error = sqlite3.Error

    _conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            prepare_sqlite_file(self._target)
            conn = sqlite3.connect(
                self._target,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=AUDIT_CACHED_STATEMENTS,
            )
            apply_sqlite_pragmas(conn, AUDIT_SQLITE_BUSY_TIMEOUT_MS)
            self._conn = conn
        return self._conn

    def _has_connection(self) -> bool:
        return self._conn is not None

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _commit_tx(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def probe(self) -> None:
        """Raise unless a write transaction can be taken now (used while the log is down).
        Then the WAL is folded back and cut to nothing where it can be: a full disk's
        recovery needs the space the failed writes grew it to."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            truncate_wal(conn)

    def _release(self, *, final: bool) -> None:
        if self._conn is None:
            return
        if final:
            try:
                # Fold the WAL into the database file: a clean stop leaves one file.
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.error("WAL checkpoint at close failed: %s", exc)
        self._conn.close()
        self._conn = None


def integrate_outbox(path: Path, *, exporters: Sequence[Exporter] = ()) -> int:
    """Integrate every waiting outbox row now into the SQLite log at ``path`` (see
    ``garrison.audit.tree_sink.integrate_with``)."""
    return integrate_with(SqliteAuditSink(path, exporters=exporters))
