"""Database engines and migrations. Only ``garrison.store`` talks to the database.

SQLite is the embedded default (one file, WAL); PostgreSQL (``postgresql+psycopg://…``) is
the scale-out store, shared by many gateway processes. Every connection gets the pragmas the audit
and directory rely on: WAL (readers never block the writer), ``synchronous=FULL`` (a commit
is on disk when it returns), foreign keys on, and a busy timeout so short write contention
waits instead of failing. The write-ahead log is bounded (``wal_autocheckpoint``,
``journal_size_limit``): an outage or a long reader can grow it, but a checkpoint gives the
space back, so a small file system is not filled by the WAL alone.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from garrison.private_files import prepare_sqlite_file

# How long a writer waits for another writer's lock before failing. Directory writes are
# rare and short; a second covers a burst of audit group commits.
SQLITE_BUSY_TIMEOUT_MS = 5000

# Pages after which a commit folds the WAL into the database file (SQLite's default, stated:
# a smaller value fsyncs the main file more often on the audit hot path).
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 1000
# Size the WAL file is cut back to after a checkpoint resets it. Without it the WAL keeps the
# size it reached at its peak (an outage, a long reader) for good — on a small file system,
# the space the recovery itself needs. 4 MiB is one autocheckpoint's worth of 4 KiB pages.
SQLITE_JOURNAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024

# PostgreSQL: the advisory lock every directory write transaction takes first (the
# equivalent of SQLite's BEGIN IMMEDIATE: what a write's rules read is what it commits
# against, so two replicas cannot both take the last seat). Directory writes are rare and
# short; the key is a fixed 64-bit number no other Garrison lock uses ("GARRDIRW").
PG_DIRECTORY_WRITE_LOCK = 0x4741525244495257
# Connections a replica keeps to PostgreSQL for directory reads and writes (the audit writer
# and the change feed hold their own): admin writes are rare and reads are snapshot loads.
PG_POOL_SIZE = 5
PG_POOL_OVERFLOW = 5

_MIGRATIONS = Path(__file__).parent / "migrations"
# Execution option that marks a transaction as a write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "garrison_write"


# Set on a connection by a write that put an event in the audit outbox.
_OUTBOX_WRITTEN = "garrison_outbox_written"
# Per engine: what to run once a transaction that wrote to the audit outbox has committed
# (``on_outbox_commit``). A process with its own audit writer registers nothing (the writer
# polls); the CLI registers ``garrison.audit.outbox.integrate_or_wait``.
_after_outbox: weakref.WeakKeyDictionary[sa.Engine, Callable[[], None]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[Any]:
    """``with write_transaction(engine) as conn:`` — one write transaction, lock taken first.
    After it commits, if it wrote to the audit outbox, the hook registered for ``engine``
    runs (outside the transaction: a hook failing cannot undo the change)."""
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        try:
            yield conn
        finally:
            wrote = conn.info.pop(_OUTBOX_WRITTEN, False)
    hook = _after_outbox.get(engine) if wrote else None
    if hook is not None:
        hook()


def outbox_written(conn: sa.Connection) -> None:
    """Mark ``conn``'s transaction as one that wrote to the audit outbox."""
    conn.info[_OUTBOX_WRITTEN] = True


def on_outbox_commit(engine: sa.Engine, hook: Callable[[], None]) -> None:
    """Run ``hook`` after each write transaction on ``engine`` that wrote to the outbox."""
    _after_outbox[engine] = hook


def is_postgres(url: str) -> bool:
    return sa.engine.make_url(url).get_backend_name() == "postgresql"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or ``None`` for other databases."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def apply_sqlite_pragmas(
    conn: sqlite3.Connection, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT_BYTES}")


def truncate_wal(conn: sqlite3.Connection) -> None:
    """Fold the whole WAL into the database file and cut the WAL to zero bytes (gives back
    the space an outage grew it to). Raises ``sqlite3.Error`` when it cannot."""
    busy, _log_pages, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise sqlite3.OperationalError("WAL checkpoint blocked by another connection")


def make_engine(url: str) -> sa.Engine:
    path = sqlite_path(url)
    if path is not None:
        if str(path) != ":memory:":
            prepare_sqlite_file(path)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # The driver would only send BEGIN at the first write, so the reads a directory
            # write checks its rules with would happen outside the transaction. Take over:
            # no implicit transactions from the driver, and BEGIN sent by the hook below.
            dbapi_conn.isolation_level = None
            apply_sqlite_pragmas(dbapi_conn)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # A write transaction takes the write lock up front, so what its rules read is
            # what it commits against (two writers cannot both take the last seat).
            immediate = conn.get_execution_options().get(WRITE_OPTION)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    engine = sa.create_engine(
        url, pool_pre_ping=True, pool_size=PG_POOL_SIZE, max_overflow=PG_POOL_OVERFLOW
    )
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "begin")
        def _on_pg_begin(conn: sa.Connection) -> None:
            if conn.get_execution_options().get(WRITE_OPTION):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_DIRECTORY_WRITE_LOCK})")

    return engine


# ``revision = "0016"`` / ``down_revision = "0015"`` (or ``None``) lines of a migration file.
_REVISION_LINE = re.compile(
    r'^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|None)\s*$', re.M
)


def shipped_head() -> str | None:
    """The newest revision of the shipped migrations, read from their files' ``revision`` and
    ``down_revision`` lines without importing alembic; ``None`` when the files do not make one
    plain chain (alembic then decides). ``tests/store`` checks it against alembic's head."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        found = dict((m[0], m[1]) for m in _REVISION_LINE.findall(path.read_text()))
        if "revision" not in found or "down_revision" not in found:
            return None
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 and len(parents) == len(revisions) - 1 else None


def _current_revision(engine: sa.Engine) -> str | None:
    """The database's revision, or ``None`` if it has none (or no version table) yet."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except sa.exc.DBAPIError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (idempotent).

    A database already at the shipped head is left alone without importing alembic: alembic
    (with mako and pygments, which it pulls in) would stay resident in every gateway process
    for good, ~12 MB of the memory issue 18 bounds, to find that nothing is to be done."""
    head = shipped_head()
    if head is not None and _current_revision(engine) == head:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
