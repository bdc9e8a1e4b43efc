"""The audit outbox's limits: rows per transaction, the idle writer's poll, the host's wait.

These drive the storage side directly: a ``Directory`` built without the host's hook leaves
its events in the outbox, as a change made by another process would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.audit import AuditLog, SqliteAuditSink, sqlite_sink, tree_sink
from garrison.audit.outbox import integrate_or_wait
from garrison.audit.writer import AUDIT_OUTBOX_POLL_S
from garrison.bootstrap import init
from garrison.domain import OrgKind
from garrison.keyring import Sealer, load_pepper
from garrison.store import Directory, instances, make_engine, sqlite_path


def _setup(tmp_path: Path) -> tuple[Directory, Path]:
    """A directory whose changes stay in the outbox (no host hook on its engine)."""
    done = init(tmp_path / "data")
    path = sqlite_path(done.settings.database_url)
    assert path is not None
    d = Directory(
        make_engine(done.settings.database_url),
        actor="other-process",
        pepper=load_pepper(done.settings.key_dir),
        sealer=Sealer.from_dir(done.settings.key_dir),
    )
    return d, path


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


def test_one_transaction_integrates_at_most_the_outbox_batch_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, path = _setup(tmp_path)
    monkeypatch.setattr(tree_sink, "AUDIT_OUTBOX_BATCH_MAX", 3)
    for n in range(7):
        d.create_org(f"team-{n}", OrgKind.INTERNAL, now=time.time())
    assert _count(path, "audit_outbox") == 7
    sink = SqliteAuditSink(path)
    sink.open()
    try:
        before = sink.tree.size
        sink.write_batch([])
        assert (sink.tree.size - before, _count(path, "audit_outbox")) == (3, 4)
        sink.write_batch([])
        sink.write_batch([])
        assert (sink.tree.size - before, _count(path, "audit_outbox")) == (7, 0)
    finally:
        sink.close()
        d.engine.dispose()


async def test_an_idle_writer_integrates_another_process_change_within_a_few_polls(
    tmp_path: Path,
) -> None:
    d, path = _setup(tmp_path)
    seen: list[str] = []
    sink = SqliteAuditSink(path)
    sink.add_listener(lambda first, events: seen.extend(e.name.value for e in events))
    log = AuditLog(sink)
    log.start()
    try:
        await asyncio.sleep(AUDIT_OUTBOX_POLL_S * 2)  # idle, the outbox empty
        await asyncio.to_thread(d.create_org, "late-team", OrgKind.INTERNAL, now=time.time())
        deadline = time.monotonic() + AUDIT_OUTBOX_POLL_S * 40
        while "org.created" not in seen and time.monotonic() < deadline:
            await asyncio.sleep(AUDIT_OUTBOX_POLL_S / 5)
        assert "org.created" in seen
        assert _count(path, "audit_outbox") == 0
    finally:
        log.close()
        d.engine.dispose()


def test_the_host_waits_for_a_live_gateway_then_integrates_itself(tmp_path: Path) -> None:
    """A gateway's lease is live but nobody integrates (it was killed): after the wait the
    host command integrates its change itself."""
    d, path = _setup(tmp_path)
    instances.register(d.engine, "gw-dead", host="h", pid=1, now=time.time(), lease_s=60)
    d.create_org("waiting-team", OrgKind.INTERNAL, now=time.time())
    started = time.monotonic()
    integrate_or_wait(d.engine, lambda: [], wait_s=0.3)
    assert time.monotonic() - started >= 0.3
    assert _count(path, "audit_outbox") == 0
    with d.engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM audit_events")).scalars().all()
    assert "org.created" in names
    d.engine.dispose()


def test_with_no_live_gateway_the_host_integrates_at_once(tmp_path: Path) -> None:
    d, path = _setup(tmp_path)
    d.create_org("now-team", OrgKind.INTERNAL, now=time.time())
    started = time.monotonic()
    integrate_or_wait(d.engine, lambda: [], wait_s=5)
    assert time.monotonic() - started < 5
    assert _count(path, "audit_outbox") == 0
    d.engine.dispose()


def test_a_row_slipped_into_the_outbox_that_is_no_record_does_not_stop_the_log(
    tmp_path: Path,
) -> None:
    """Attack: someone with write access to the database puts junk in the outbox. The junk
    stays there (evidence) and the real changes behind it are integrated."""
    d, path = _setup(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO audit_outbox (at, name, record) VALUES (1.0, 'org.created', x'7b7d')")
    conn.commit()
    conn.close()
    d.create_org("after-junk", OrgKind.INTERNAL, now=time.time())
    sink = SqliteAuditSink(path)
    sink.open()
    try:
        before = sink.tree.size
        sink.write_batch([])
        assert sink.tree.size == before + 1
        assert _count(path, "audit_outbox") == 1  # the junk, left as evidence
    finally:
        sink.close()
        d.engine.dispose()


def test_the_host_integration_ends_when_only_junk_is_left(tmp_path: Path) -> None:
    d, path = _setup(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO audit_outbox (at, name, record) VALUES (1.0, 'x', x'00')")
    conn.commit()
    conn.close()
    d.create_org("with-junk", OrgKind.INTERNAL, now=time.time())
    assert sqlite_sink.integrate_outbox(path) == 1
    assert _count(path, "audit_outbox") == 1
    d.engine.dispose()
