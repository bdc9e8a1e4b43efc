"""The PostgreSQL audit sink's own limits: the write lock's timeout, the probe, reconnecting
after the database drops its connection, and the outbox integrated by a host command."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.events import AuditEvent, EventName
from garrison.audit.parallel_verify import CHUNK, verify_parallel
from garrison.audit.pg_sink import (
    AUDIT_PG_CONNECT_TIMEOUT_S,
    AUDIT_PG_LOCK_TIMEOUT_MS,
    AUDIT_PG_STATEMENT_TIMEOUT_MS,
    PgAuditSink,
    libpq_url,
)
from garrison.audit.sinks import integrate_outbox, open_sink
from garrison.audit.sqlite_reader import open_reader
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.verify import verify_log
from garrison.domain import OrgKind
from garrison.errors import ConfigError
from garrison.keyring import Sealer, create_key_files, load_pepper
from garrison.store import Directory, make_engine
from tests.support import pg
from tests.support.db import hold_audit_lock


@pytest.fixture
def url() -> Iterator[str]:
    with pg.fresh_database() as fresh:
        yield fresh


@pytest.fixture
def sink(url: str) -> Iterator[PgAuditSink]:
    s = PgAuditSink(url)
    s.open()
    try:
        yield s
    finally:
        s.close()


def events(n: int, tag: str = "e") -> list[AuditEvent]:
    return [AuditEvent(EventName.REQUEST_DENIED, at=1.0, request_id=f"{tag}{i}") for i in range(n)]


def test_open_sink_gives_the_postgresql_sink_for_a_postgresql_url(url: str) -> None:
    assert isinstance(open_sink(url), PgAuditSink)


def test_a_batch_waits_at_most_the_lock_timeout_for_the_write_lock(
    url: str, sink: PgAuditSink
) -> None:
    with hold_audit_lock(url):
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            sink.write_batch(events(1))
        waited = time.monotonic() - started
    assert AUDIT_PG_LOCK_TIMEOUT_MS / 1000 * 0.9 <= waited < AUDIT_PG_LOCK_TIMEOUT_MS / 1000 + 1
    assert sink.tree.size == 0  # the failed batch left the tree where it was
    sink.write_batch(events(1))  # and the next one goes through
    assert sink.tree.size == 1


def test_the_probe_fails_while_the_lock_is_held_and_passes_after(
    url: str, sink: PgAuditSink
) -> None:
    with hold_audit_lock(url), pytest.raises(psycopg.errors.LockNotAvailable):
        sink.probe()
    sink.probe()


def test_a_dropped_connection_is_replaced_by_the_next_batch(url: str, sink: PgAuditSink) -> None:
    sink.write_batch(events(2, "a"))
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'garrison-audit' AND pid <> pg_backend_pid()"
        )
    with pytest.raises(psycopg.OperationalError):
        sink.write_batch(events(1, "lost"))
    sink.write_batch(events(2, "b"))
    with open_reader(url) as reader:
        ids = [row[0] for row in reader.rows()]
        report = verify_log(reader.rows(), reader.checkpoints(), {})
    assert ids == [1, 2, 3, 4]
    assert report.ok, report.problems


def test_a_host_command_integrates_the_outbox_on_postgresql(url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    create_key_files(keys)
    engine = make_engine(url)
    try:
        directory = Directory(
            engine, actor="test", pepper=load_pepper(keys), sealer=Sealer.from_dir(keys)
        )
        directory.create_org("team-a", OrgKind.INTERNAL, now=time.time())
        with engine.connect() as conn:
            waiting = conn.execute(sa.text("SELECT count(*) FROM audit_outbox")).scalar()
        assert waiting and waiting >= 1
        assert integrate_outbox(url) == waiting
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM audit_outbox")).scalar() == 0
            names = conn.execute(sa.text("SELECT name FROM audit_events ORDER BY seq")).scalars()
            assert "org.created" in list(names)
    finally:
        engine.dispose()


def test_the_audit_connection_carries_its_timeouts(sink: PgAuditSink) -> None:
    conn = sink._connection()
    try:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings"
            " WHERE name IN ('lock_timeout', 'statement_timeout')"  # both in milliseconds
        ).fetchall()
    finally:
        conn.rollback()
    assert {str(name): str(value) for name, value in rows} == {
        "lock_timeout": str(AUDIT_PG_LOCK_TIMEOUT_MS),
        "statement_timeout": str(AUDIT_PG_STATEMENT_TIMEOUT_MS),
    }
    assert f"connect_timeout={AUDIT_PG_CONNECT_TIMEOUT_S}" in conn.info.dsn


def test_open_sink_chooses_by_the_url_and_refuses_other_databases(tmp_path: Path) -> None:
    assert isinstance(open_sink(f"sqlite:///{tmp_path / 'g.db'}"), SqliteAuditSink)
    with pytest.raises(ConfigError):
        open_sink("mysql://root@127.0.0.1/garrison")


def test_the_parallel_fast_path_reads_a_postgresql_log_and_steps_aside_on_damage(
    url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    signer = Signer.from_dir(keys)
    total = CHUNK + 500  # a whole chunk and a tail
    sink = PgAuditSink(url, signer=signer, monotonic=lambda: 0.0)
    sink.open()
    written = 0
    for size in (1000, CHUNK, total):
        for start in range(written, size, 2000):
            sink.write_batch(events_from(start, min(size, start + 2000)))
        sink.checkpoint()
        written = size
    sink.close()
    with open_reader(url) as reader:
        checkpoints = reader.checkpoints()
        fast = verify_parallel(reader.path, total, checkpoints, signer.public_keys(), jobs=2)
        slow = verify_log(reader.rows(), checkpoints, signer.public_keys())
    assert fast is not None and slow.ok
    assert (fast.events, fast.root) == (slow.events, slow.root)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("UPDATE audit_events SET record = record || '\\x20'::bytea WHERE seq = 700")
    with open_reader(url) as reader:
        assert (
            verify_parallel(reader.path, total, checkpoints, signer.public_keys(), jobs=2) is None
        )


def events_from(start: int, end: int) -> list[AuditEvent]:
    return [
        AuditEvent(EventName.REQUEST_ALLOWED, at=float(i), request_id=f"r{i}")
        for i in range(start, end)
    ]
