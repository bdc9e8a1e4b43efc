"""Database helpers for tests: reads through the directory's own engine, so the same
assertion holds on SQLite and PostgreSQL.

Audit records: a directory change writes its event to ``audit_outbox`` in its own
transaction, and an audit writer later moves it into ``audit_events`` (``garrison.audit``).
Store tests check what the store wrote, not whether a writer has run yet, so the readers
here take both tables as one log: ``audit_events`` in leaf order, then the outbox in its
order (on SQLite a host command integrates before it returns, so the outbox is empty).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa

from garrison.audit import AuditEvent
from garrison.audit.pg_sink import AUDIT_PG_WRITE_LOCK, libpq_url
from garrison.audit.sinks import integrate_outbox, open_sink
from garrison.store import schema, sqlite_path


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
    """A plain sqlite3 connection to a ``Directory``'s database file (SQLite only)."""
    return sqlite3.connect(str(directory.engine.url.database))


def _engine(directory: Any) -> sa.Engine:
    engine = directory if isinstance(directory, sa.Engine) else directory.engine
    assert isinstance(engine, sa.Engine)
    return engine


def rows(directory: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of ``sql`` (``:name`` parameters) as dictionaries, on either backend."""
    with _engine(directory).connect() as conn:
        return [
            {k: bytes(v) if isinstance(v, memoryview) else v for k, v in r._mapping.items()}
            for r in conn.execute(sa.text(sql), params)
        ]


def one(directory: Any, sql: str, **params: Any) -> dict[str, Any]:
    found = rows(directory, sql, **params)
    assert len(found) == 1, (sql, params, found)
    return found[0]


def row_counts(directory: Any) -> dict[str, int]:
    """Rows in every table (directory, change feed, audit log, the rest); the audit outbox
    is counted with ``audit_events`` (see the module's docstring)."""
    engine = _engine(directory)
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        counts = {
            t: int(conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one())  # noqa: S608
            for t in tables
        }
    counts["audit_events"] = counts.get("audit_events", 0) + counts.pop("audit_outbox", 0)
    return counts


def recorded(directory: Any, *, name: str | None = None) -> list[bytes]:
    """Every audit record the database holds (integrated, then waiting), optionally of one
    event name."""
    out: list[bytes] = []
    with _engine(directory).connect() as conn:
        for table in (schema.audit_events, schema.audit_outbox):
            stmt = sa.select(table.c.record).order_by(table.c.seq)
            if name is not None:
                stmt = stmt.where(table.c.name == name)
            out += [bytes(r) for r in conn.execute(stmt).scalars()]
    return out


def integrate(directory: Any) -> None:
    """Give every waiting outbox record its leaf index in ``audit_events`` now, through the
    real audit writer of the directory's database (what a gateway or a host command does)."""
    integrate_outbox(_engine(directory).url.render_as_string(hide_password=False))


def write_events(directory: Any, events: Iterable[AuditEvent]) -> None:
    """Append ``events`` to the log as the next leaves, through the database's audit sink
    (waiting outbox records go first, as in every writer's batch)."""
    url = _engine(directory).url.render_as_string(hide_password=False)
    sink = open_sink(url)
    sink.open()
    try:
        sink.write_batch(list(events))
    finally:
        sink.close()


def row(directory: Any, table: str, name: str) -> dict[str, Any]:
    """The row of ``table`` whose ``name`` is ``name``."""
    return one(directory, f"SELECT * FROM {table} WHERE name = :name", name=name)  # noqa: S608


def sql(directory: Any, query: str, **params: Any) -> None:
    """A direct write: someone else changing a row meanwhile."""
    with _engine(directory).begin() as conn:
        conn.execute(sa.text(query), params)


def events(directory: Any, name: str) -> list[dict[str, Any]]:
    """The decoded audit records of one event name, in log order."""
    return [orjson.loads(r) for r in recorded(directory, name=name)]


@contextlib.contextmanager
def nothing_written(directory: Any, table: str, name: str) -> Iterator[None]:
    """The block writes no row anywhere and leaves ``table``'s row ``name`` as it was."""
    counts = row_counts(directory)
    before = row(directory, table, name)
    yield
    assert row_counts(directory) == counts
    assert row(directory, table, name) == before


def stored_bytes(directory: Any) -> bytes:
    """Everything the database holds, as bytes: SQLite's files as written on disk (the
    engine is disposed first); on PostgreSQL, every row of every table (what ``pg_dump``
    would copy)."""
    engine = _engine(directory)
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    engine.dispose()
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    out = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for r in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # noqa: S608
                for value in r:
                    if isinstance(value, bytes | memoryview):
                        out.append(bytes(value))
                    else:
                        out.append(repr(value).encode())
    engine.dispose()
    return b"\n".join(out)


def audit_rows(directory: Any, name: str | None = None) -> list[dict[str, Any]]:
    """The audit log's rows (integrated, then waiting in the outbox), optionally of one event
    name, as dictionaries."""
    where = "" if name is None else " WHERE name = :name"
    return [
        r
        for table in ("audit_events", "audit_outbox")
        for r in rows(directory, f"SELECT * FROM {table}{where} ORDER BY seq", name=name)  # noqa: S608
    ]


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


@contextlib.contextmanager
def database_lost(database_url: str) -> Iterator[None]:
    """The database cannot be written (nor, on PostgreSQL, reached) for the block: SQLite's
    write lock held by another connection; PostgreSQL refusing every connection and ending
    every session on the database (a failover or a cut network). Back on exit."""
    path = sqlite_path(database_url)
    if path is not None:
        with hold_write_lock(path):
            yield
        return
    from tests.support.replicas import blocked

    name = sa.engine.make_url(database_url).database
    assert name is not None
    with blocked(name):
        yield
