"""The change feed on both databases: the version probe, and on PostgreSQL the notification
a directory write sends (delivered on commit only) and the listener that receives it,
reconnecting when its connection is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.domain import OrgKind
from garrison.keyring import Sealer, create_key_files, load_pepper
from garrison.store import Directory, current_version, make_engine, migrate
from garrison.store.change_feed import (
    CHANNEL,
    PG_PROBE_TIMEOUT_MS,
    ChangeListener,
    PgVersionProbe,
    SqliteVersionProbe,
    notify_change,
    pg_conninfo,
    version_probe,
)
from garrison.store.db import write_transaction
from tests.support import pg

NOW = 1_800_000_000.0
# Longest wait for a notification or a reconnection on a loaded test machine.
WAIT_S = 10.0


def _directory(url: str, key_dir: Path) -> Directory:
    create_key_files(key_dir)
    return Directory(
        make_engine(url),
        actor="test",
        pepper=load_pepper(key_dir),
        sealer=Sealer.from_dir(key_dir),
    )


@pytest.fixture
def pg_directory(tmp_path: Path) -> Iterator[Directory]:
    with pg.fresh_database() as url:
        directory = _directory(url, tmp_path / "keys")
        try:
            yield directory
        finally:
            directory.engine.dispose()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Heard:
    """What a listener reported, from its thread."""

    def __init__(self) -> None:
        self.changes: list[int] = []
        self.resyncs = 0
        self._lock = threading.Lock()

    def change(self, seq: int) -> None:
        with self._lock:
            self.changes.append(seq)

    def resync(self) -> None:
        with self._lock:
            self.resyncs += 1


def _listener(url: str, heard: Heard) -> ChangeListener:
    return ChangeListener(
        url, on_change=heard.change, on_resync=heard.resync, backoff_min_s=0.05, backoff_max_s=0.2
    )


def test_the_sqlite_probe_reads_the_newest_change(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    directory = _directory(url, tmp_path / "keys")
    migrate(directory.engine)
    probe = version_probe(url)
    assert isinstance(probe, SqliteVersionProbe)
    assert not probe.in_thread  # microseconds: on the event loop
    before = probe.version()
    directory.create_org("acme", OrgKind.INTERNAL, now=NOW)
    with directory.engine.connect() as conn:
        assert probe.version() == current_version(conn) > before
    probe.close()
    directory.engine.dispose()


def test_the_postgres_probe_reads_the_newest_change(pg_directory: Directory) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    probe = version_probe(url)
    assert isinstance(probe, PgVersionProbe)
    assert probe.in_thread  # a network round trip: never on the event loop
    try:
        before = probe.version()
        pg_directory.create_org("acme", OrgKind.INTERNAL, now=NOW)
        with pg_directory.engine.connect() as conn:
            assert probe.version() == current_version(conn) > before
    finally:
        probe.close()


def test_a_postgres_probe_survives_a_lost_connection(pg_directory: Directory) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    probe = PgVersionProbe(url)
    try:
        first = probe.version()
        _terminate(url, "garrison-change-feed")
        with pytest.raises(Exception):  # noqa: B017 - the driver's error, whichever it is
            probe.version()
        assert probe.version() == first  # the next read opens a new connection
    finally:
        probe.close()


def test_a_postgres_probe_held_by_a_lock_gives_up_after_its_timeout(
    pg_directory: Directory,
) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    probe = PgVersionProbe(url)
    try:
        first = probe.version()
        with pg_directory.engine.connect() as holder, holder.begin():
            holder.execute(sa.text("LOCK TABLE change_feed IN ACCESS EXCLUSIVE MODE"))
            t0 = time.monotonic()
            with pytest.raises(Exception, match="statement timeout"):
                probe.version()
            waited = time.monotonic() - t0
        assert PG_PROBE_TIMEOUT_MS / 1000 * 0.9 <= waited < PG_PROBE_TIMEOUT_MS / 1000 * 5
        assert probe.version() == first  # the lock is gone: read again
    finally:
        probe.close()


def test_a_directory_write_notifies_its_version_on_commit(pg_directory: Directory) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    heard = Heard()
    listener = _listener(url, heard)
    listener.start()
    try:
        _until(lambda: listener.healthy and heard.resyncs == 1, "the listener")
        pg_directory.create_org("acme", OrgKind.INTERNAL, now=NOW)
        _until(lambda: bool(heard.changes), "the notification")
        with pg_directory.engine.connect() as conn:
            assert heard.changes == [current_version(conn)]
    finally:
        listener.stop()
    assert not listener.healthy


def test_a_rolled_back_change_notifies_nobody(pg_directory: Directory) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    heard = Heard()
    listener = _listener(url, heard)
    listener.start()
    try:
        _until(lambda: listener.healthy, "the listener")

        class Abandon(Exception):
            pass

        with pytest.raises(Abandon), write_transaction(pg_directory.engine) as conn:
            notify_change(conn, 999)
            raise Abandon
        pg_directory.create_org("acme", OrgKind.INTERNAL, now=NOW)  # this one commits
        _until(lambda: bool(heard.changes), "the committed change's notification")
        time.sleep(0.2)
        assert 999 not in heard.changes
        assert len(heard.changes) == 1
    finally:
        listener.stop()


def test_a_lost_listener_reconnects_and_asks_for_a_reload(pg_directory: Directory) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    heard = Heard()
    listener = _listener(url, heard)
    listener.start()
    try:
        _until(lambda: listener.healthy and heard.resyncs == 1, "the listener")
        _terminate(url, "garrison-change-feed")
        # Lost, then back: a notification may have been missed, so it asks for a reload.
        _until(lambda: heard.resyncs == 2 and listener.healthy, "the reconnection")
        assert listener.losses == 1
        pg_directory.create_org("acme", OrgKind.INTERNAL, now=NOW)
        _until(lambda: bool(heard.changes), "a notification after the reconnection")
    finally:
        listener.stop()


def test_a_listener_keeps_trying_while_the_database_refuses(pg_directory: Directory) -> None:
    url = pg_directory.engine.url.render_as_string(hide_password=False)
    name = pg_directory.engine.url.database
    heard = Heard()
    listener = _listener(url, heard)
    listener.start()
    try:
        _until(lambda: listener.healthy, "the listener")
        with _admin() as admin:
            admin.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            _terminate(url, "garrison-change-feed")
            _until(lambda: not listener.healthy, "the listener to notice")
            time.sleep(0.5)  # several failed reconnections (backoff 0.05 → 0.2 s)
            assert not listener.healthy and heard.resyncs == 1
            admin.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        _until(lambda: listener.healthy and heard.resyncs == 2, "the listener to return")
    finally:
        listener.stop()


def test_the_channel_is_a_plain_identifier() -> None:
    # LISTEN takes an identifier, not a parameter: the constant must need no quoting.
    assert CHANNEL.isidentifier() and CHANNEL.islower()


def test_the_conninfo_keeps_the_password_for_libpq() -> None:
    info = pg_conninfo("postgresql+psycopg://u:s3cret@db.example:5433/garrison?sslmode=require")
    assert info == "postgresql://u:s3cret@db.example:5433/garrison?sslmode=require"


def _admin() -> sa.Connection:
    engine = sa.create_engine(
        pg.ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    return engine.connect()


def _terminate(url: str, application: str) -> None:
    """End the sessions of ``application`` on ``url``'s database, as a failover would."""
    name = sa.engine.make_url(url).database
    with _admin() as admin:
        admin.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND application_name = :app"
            ),
            {"db": name, "app": application},
        )
