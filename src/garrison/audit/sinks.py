"""Which audit sink a database URL gets: the one place that chooses.

``sqlite:///…`` — the embedded log (``garrison.audit.sqlite_sink``); ``postgresql+psycopg://…``
— the log shared by every replica (``garrison.audit.pg_sink``). Both take the same
arguments and keep the same interface (``garrison.audit.writer.AuditSink``, plus
``outbox_waiting``, ``probe`` and ``add_listener``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from garrison.audit.checkpoint import Signer
from garrison.audit.exporters import Exporter
from garrison.audit.tree_sink import TreeSink, integrate_with
from garrison.audit.witness import DirectoryWitness
from garrison.errors import ConfigError


def _backend(database_url: str) -> str:
    return sa.engine.make_url(database_url).get_backend_name()


def open_sink(
    database_url: str,
    *,
    signer: Signer | None = None,
    witness: DirectoryWitness | None = None,
    exporters: Sequence[Exporter] = (),
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> TreeSink[Any]:
    """The audit sink for ``database_url`` (not yet opened: the writer opens it)."""
    backend = _backend(database_url)
    if backend == "postgresql":
        from garrison.audit.pg_sink import PgAuditSink  # only a PostgreSQL process loads psycopg

        return PgAuditSink(
            database_url,
            signer=signer,
            witness=witness,
            exporters=exporters,
            clock=clock,
            monotonic=monotonic,
        )
    if backend == "sqlite":
        from garrison.audit.sqlite_sink import SqliteAuditSink
        from garrison.store.db import sqlite_path

        path = sqlite_path(database_url)
        if path is None:
            raise ConfigError("the SQLite database URL names no file")
        return SqliteAuditSink(
            path,
            signer=signer,
            witness=witness,
            exporters=exporters,
            clock=clock,
            monotonic=monotonic,
        )
    raise ConfigError(f"the audit log needs SQLite or PostgreSQL, not {backend!r}")


def integrate_outbox(database_url: str, *, exporters: Sequence[Exporter] = ()) -> int:
    """Integrate every waiting outbox row now (a host command, no writer of its own)."""
    return integrate_with(open_sink(database_url, exporters=exporters))
