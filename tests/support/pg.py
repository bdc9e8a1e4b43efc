"""PostgreSQL for tests: a fresh database per test, cloned from a migrated template.

The server is the machine's own (``GARRISON_TEST_PG``, default ``127.0.0.1:5432`` with trust
auth, database ``test``; CI has it). Each test run makes one template database, migrated
once, and every test that asks gets its own copy of it (``CREATE DATABASE … TEMPLATE``,
~0.1 s), dropped when the test ends; the template is dropped when the run ends. Database
names carry this run's id, so parallel workers and runs never meet, and a run killed before
its clean-up leaves databases that ``drop_stale`` (called at each run's start) removes once
they are older than ``STALE_AFTER_S``.

Without a server, the tests that need one are skipped with the reason ``PG_SKIP_REASON``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

# The maintenance connection: where CREATE/DROP DATABASE are sent from.
ADMIN_URL = os.environ.get("GARRISON_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Every database a test run makes starts with this (and nothing else does on that server).
PREFIX = "garrison_t_"
# A database of an earlier run left behind (the run was killed) is dropped after this long:
# long enough that no live run's databases are touched (a full suite takes ~15 minutes).
STALE_AFTER_S = 6 * 3600
PG_SKIP_REASON = (
    "PostgreSQL is not reachable at GARRISON_TEST_PG (default 127.0.0.1:5432, trust auth): "
    "the PostgreSQL half of the storage tests needs it (CI has it)"
)

_lock = threading.Lock()
_template: str | None = None
_available: bool | None = None
# This run: pid + time, so names sort by age and never collide across xdist workers.
_RUN = f"{int(time.time())}_{os.getpid()}"


def _admin() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def url_for(name: str) -> str:
    return str(sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False))


def available() -> bool:
    global _available
    if _available is None:
        try:
            with _admin().connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _available = True
        except Exception:
            _available = False
    return _available


def require() -> None:
    """Skip the calling test (with the stated reason) when there is no PostgreSQL."""
    if not available():
        pytest.skip(PG_SKIP_REASON)


def _drop(conn: sa.Connection, name: str) -> None:
    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_stale(now: float | None = None) -> None:
    """Drop databases that earlier, killed runs left behind (older than ``STALE_AFTER_S``)."""
    now = time.time() if now is None else now
    with _admin().connect() as conn:
        names = conn.execute(
            sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": PREFIX + "%"},
        ).scalars()
        for name in list(names):
            try:
                started = int(name[len(PREFIX) :].split("_", 2)[1])
            except (IndexError, ValueError):
                continue
            if now - started > STALE_AFTER_S:
                _drop(conn, name)


def template() -> str:
    """This run's migrated template database (made on first use)."""
    global _template
    with _lock:
        if _template is None:
            from garrison.store import make_engine, migrate

            name = f"{PREFIX}tpl_{_RUN}"
            with _admin().connect() as conn:
                _drop(conn, name)
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            engine = make_engine(url_for(name))
            try:
                migrate(engine)
            finally:
                engine.dispose()
            _template = name
        return _template


# Databases a test is done with, dropped by one background thread: a DROP DATABASE waits for
# a checkpoint (0.1-1.3 s measured here), and no test needs to wait for its own.
_done: queue.Queue[str] = queue.Queue()
_dropper: threading.Thread | None = None
# Longest the end of a run waits for the background drops still queued (then ``drop_stale``
# of a later run removes what is left).
FINISH_WAIT_S = 120.0


def _drop_loop() -> None:
    while True:
        name = _done.get()
        try:
            with _admin().connect() as conn:
                _drop(conn, name)
        except Exception:  # noqa: S110 - a later run's drop_stale removes what is left
            pass
        finally:
            _done.task_done()


def _drop_later(name: str) -> None:
    global _dropper
    with _lock:
        if _dropper is None:
            _dropper = threading.Thread(target=_drop_loop, name="pg-dropper", daemon=True)
            _dropper.start()
    _done.put(name)


def finish() -> None:
    """The end of a run: wait (bounded) for the queued drops, then drop the template."""
    deadline = time.monotonic() + FINISH_WAIT_S
    while _done.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    drop_template()


def drop_template() -> None:
    global _template
    if _template is not None and available():
        with _admin().connect() as conn:
            _drop(conn, _template)
        _template = None


@contextlib.contextmanager
def fresh_database(*, migrated: bool = True) -> Iterator[str]:
    """A new, empty (or migrated) database of its own; dropped afterwards. Yields its URL."""
    require()
    name = f"{PREFIX}db_{_RUN}_{uuid.uuid4().hex[:10]}"
    source = f' TEMPLATE "{template()}"' if migrated else ""
    with _admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{source}'))
    try:
        yield url_for(name)
    finally:
        _drop_later(name)


def unique_name(label: str) -> str:
    """A database name for this run that nothing else uses (and ``drop_stale`` recognises)."""
    return f"{PREFIX}{label}_{_RUN}_{uuid.uuid4().hex[:10]}"


def drop(name: str) -> None:
    """Drop the database ``name`` now if it exists, ending its connections (made by others,
    e.g. the ``createdb`` of a walkthrough)."""
    with _admin().connect() as conn:
        _drop(conn, name)


@contextlib.contextmanager
def copy_of(url: str) -> Iterator[str]:
    """A new database cloned from the one at ``url`` (nobody may be connected to it: dispose
    its engines first); dropped afterwards. Yields its URL."""
    require()
    source = sa.engine.make_url(url).database
    name = f"{PREFIX}db_{_RUN}_{uuid.uuid4().hex[:10]}"
    with _admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    try:
        yield url_for(name)
    finally:
        _drop_later(name)
