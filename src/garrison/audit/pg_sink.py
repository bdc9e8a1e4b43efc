"""The scale-out audit sink: PostgreSQL, shared by every gateway replica, under the shared
recipe of ``garrison.audit.tree_sink``.

One log, one tree, one checkpoint chain for N replicas, with no election: each batch
transaction takes one PostgreSQL advisory lock first (``pg_advisory_xact_lock`` on
``AUDIT_PG_WRITE_LOCK``), then folds the rows other replicas committed since its last batch
into its in-memory tree (their 32-byte leaf hashes, not their records), takes waiting outbox
rows, appends its own batch with the next leaf indices, signs a checkpoint chained to the
newest one stored when one is due, and commits; the commit releases the lock. So leaf order
is the order of those transactions, every replica's tree is the same tree, and a replica
that dies mid-batch loses only its uncommitted batch (its callers were never answered): its
session ends and PostgreSQL releases the lock, with no takeover gap. The rule "an allowed
call is forwarded only after its record is committed" is unchanged (``synchronous_commit``
is on by default: the commit is in the WAL on disk when it returns).

It uses psycopg directly on a connection of its own (not the SQLAlchemy pool), in pipeline
mode: the batch's rows go in one statement with the commit. docs/operations.md ("The audit
log on PostgreSQL") says why a per-transaction lock rather than an elected integrator;
docs/benchmarks.md has the measured throughput.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa

from garrison.audit.exporters import Exporter
from garrison.audit.leaves import POSTGRES
from garrison.audit.tree_sink import TreeSink, integrate_with

log = logging.getLogger("garrison.audit")

# The one lock every audit write transaction takes first, on every replica ("GARRAUDT" as a
# 64-bit number; no other Garrison lock uses it). Transaction-scoped: COMMIT, ROLLBACK or
# the session's end (a killed replica) releases it.
AUDIT_PG_WRITE_LOCK = 0x4741525241554454
# Longest a batch waits for the lock (or any row lock) before failing: like SQLite's audit
# busy timeout, a stuck holder turns into refused calls (503) inside the append timeout.
AUDIT_PG_LOCK_TIMEOUT_MS = 1000
# Longest one statement may run: a batch is a few ms; past the append timeout (2 s) no
# caller is waiting for it any more, so it fails and the writer retries or probes.
AUDIT_PG_STATEMENT_TIMEOUT_MS = 2000
# Longest a (re)connection attempt waits: the writer probes every 0.2 s while the database
# is down, and a probe must not hang on an unreachable host.
AUDIT_PG_CONNECT_TIMEOUT_S = 2

_LOCK = "SELECT pg_advisory_xact_lock(%s)"


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://…``) as libpq takes it."""
    url = sa.engine.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgAuditSink(TreeSink[str]):
    """The log in the PostgreSQL database at its target (a SQLAlchemy URL)."""

    dialect = POSTGRES
    _db_error = psycopg.Error

    _conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(
                libpq_url(self._target),
                autocommit=False,
                connect_timeout=AUDIT_PG_CONNECT_TIMEOUT_S,
                options=(
                    f"-c lock_timeout={AUDIT_PG_LOCK_TIMEOUT_MS}"
                    f" -c statement_timeout={AUDIT_PG_STATEMENT_TIMEOUT_MS}"
                ),
                application_name="garrison-audit",
            )
            self._conn = conn
        return self._conn

    def _has_connection(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _begin(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute(_LOCK, (AUDIT_PG_WRITE_LOCK,))

    def _commit_tx(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.commit()

    def _batch_scope(
        self, conn: psycopg.Connection[tuple[object, ...]]
    ) -> contextlib.AbstractContextManager[Any]:
        return conn.pipeline()

    def _rollback(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        try:
            conn.rollback()
        except psycopg.Error:
            self._drop()  # the connection is gone: the next batch reconnects
        else:
            if conn.broken:
                self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error as exc:
                log.debug("closing a broken audit connection: %s", exc)
            self._conn = None

    def probe(self) -> None:
        """Raise unless the log's write lock can be taken now (used while the log is down)."""
        conn = self._connection()
        try:
            self._begin(conn)
        finally:
            self._rollback(conn)

    def _release(self, *, final: bool) -> None:
        self._drop()


def integrate_outbox(database_url: str, *, exporters: Sequence[Exporter] = ()) -> int:
    """Integrate every waiting outbox row now into the PostgreSQL log (see
    ``garrison.audit.tree_sink.integrate_with``)."""
    return integrate_with(PgAuditSink(database_url, exporters=exporters))
