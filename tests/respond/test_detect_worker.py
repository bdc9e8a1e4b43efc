"""One detection worker for every process sharing a database: elected with a lease, reading
the shared audit log from a stored cursor, its detectors' state stored with each range's
alerts in one transaction.

On SQLite and on PostgreSQL: only one of several monitors works; a stop hands over within a
standby poll; a worker that lost its lease stores nothing; a range is judged exactly once
across a handover. End to end: a key used from two networks through two gateways is caught
once; a window spanning a restart still fires; the worker killed with SIGKILL mid-stream is
replaced within ``DETECT_LEASE_S + DETECT_STANDBY_POLL_S`` and no alert is missed or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from garrison.audit.events import AuditEvent, EncodedRecord, EventName
from garrison.bootstrap import init, open_directory
from garrison.detect.engine import Verdict
from garrison.detect.observation import Finding, Obs, Severity
from garrison.errors import DetectionLeaseLost
from garrison.keyring import Sealer, load_pepper
from garrison.respond import log_feed
from garrison.respond import monitor as monitor_mod
from garrison.respond.log_feed import LogFeed
from garrison.respond.monitor import Monitor
from garrison.server import Gateway
from garrison.store import Directory, alerts, detector_state, make_engine, schema
from garrison.store.db import write_transaction
from garrison.store.snapshot import Snapshot
from tests.support import pg
from tests.support.admin import admin_call
from tests.support.detection import chat_from, out_of_network, wait_for
from tests.support.serve_processes import GARRISON, free_port
from tests.support.world import World, start_world, stop_world

# Election, handover and detection take milliseconds to a few seconds; a safety net.
GUARD_S = 20.0
HOME, AWAY = "127.0.0.1", "127.0.1.9"


# ── a database of either kind, written to as other replicas would ─────────────────────────
@dataclass
class Db:
    kind: str
    engine: sa.Engine
    key_dir: Path
    db_path: Path

    def directory_for(self, actor: str) -> Directory:
        return Directory(
            self.engine,
            actor=actor,
            pepper=load_pepper(self.key_dir),
            sealer=Sealer.from_dir(self.key_dir),
        )

    def append(self, *events: AuditEvent) -> None:
        """Rows in the shared log, as another replica's audit writer commits them."""
        if self.kind == "sqlite":  # the directory's outbox, integrated at once (the CLI way)
            d = self.directory_for("replica-2")
            for e in events:
                d.record_copy(e.name, now=e.at, data=e.data)
            return
        a = schema.audit_events
        with write_transaction(self.engine) as conn:  # as PostgreSQL's integrator does
            seq = detector_state.head(conn)
            for e in events:
                seq += 1
                conn.execute(
                    sa.insert(a).values(
                        seq=seq, at=e.at, name=e.name.value, record=e.encode(seq - 1)
                    )
                )

    def monitor(self, worker_id: str, facts: Callable[[], Snapshot] = Snapshot.empty) -> Monitor:
        return Monitor(
            engine=self.engine,
            directory_for=self.directory_for,
            facts=facts,
            after_write=lambda: None,
            worker_id=worker_id,
        )

    def alerts(self) -> list[tuple[str, int]]:
        """(subject, count) of every alert, oldest first."""
        al = schema.alerts
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(al.c.subject_id, al.c["count"]).order_by(al.c.seq))
            return [(str(s), int(c)) for s, c in rows]

    def raised(self) -> list[str]:
        """Subjects of the ``alert.raised`` events (in the log or still in the outbox)."""
        found: list[str] = []
        with self.engine.connect() as conn:
            for table in (schema.audit_events, schema.audit_outbox):
                for (record,) in conn.execute(
                    sa.select(table.c.record).where(table.c.name == "alert.raised")
                ):
                    text = bytes(record)
                    if table is schema.audit_outbox:  # not yet given a leaf index
                        text = EncodedRecord.from_unindexed(text).record(0)
                    found.append(orjson.loads(text)["data"]["subject"]["id"])
        return sorted(found)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    done = init(tmp_path / "data")
    if request.param == "sqlite":
        d = open_directory(done.settings, actor="test")
        try:
            yield Db("sqlite", d.engine, done.settings.key_dir, tmp_path / "data" / "garrison.db")
        finally:
            d.engine.dispose()
        return
    with pg.fresh_database() as url:
        engine = make_engine(url)
        try:
            yield Db("postgresql", engine, done.settings.key_dir, tmp_path / "unused.db")
        finally:
            engine.dispose()


@contextlib.contextmanager
def running(*monitors: Monitor) -> Iterator[None]:
    for m in monitors:
        m.start()
    try:
        yield
    finally:
        for m in monitors:
            m.stop()


# ── the lease (storage) ────────────────────────────────────────────────────────────────────
def test_the_first_worker_starts_at_the_head_of_the_log(db: Db) -> None:
    now = time.time()
    db.append(out_of_network("k-before", now))
    claimed = detector_state.claim(db.engine, "a", now=now, lease_s=5)
    assert claimed is not None
    with db.engine.connect() as conn:
        assert claimed.cursor == detector_state.head(conn) > 0  # history is not judged
    assert claimed.state is None and claimed.previous is None


def test_a_live_lease_is_not_claimed_a_lapsed_or_released_one_is(db: Db) -> None:
    now = time.time()
    assert detector_state.claim(db.engine, "a", now=now, lease_s=5) is not None
    assert detector_state.claim(db.engine, "b", now=now + 4, lease_s=5) is None
    assert detector_state.renew(db.engine, "a", now=now + 4, lease_s=5)
    assert detector_state.claim(db.engine, "b", now=now + 8, lease_s=5) is None  # renewed
    taken = detector_state.claim(db.engine, "b", now=now + 10, lease_s=5)  # lapsed
    assert taken is not None and taken.previous == "a"
    assert not detector_state.renew(db.engine, "a", now=now + 10, lease_s=5)
    detector_state.release(db.engine, "b")
    back = detector_state.claim(db.engine, "a", now=now + 11, lease_s=5)
    assert back is not None and back.previous == "b"


def test_a_worker_that_lost_its_lease_stores_nothing_of_its_range(db: Db) -> None:
    """Fencing: the alerts of a range and the cursor commit only if the committer holds the
    lease and the cursor is where it left it — a worker that stalled past its lease (and was
    replaced) cannot store a range its successor also judges."""
    now = time.time()
    start = detector_state.claim(db.engine, "a", now=now, lease_s=5)
    assert start is not None
    assert detector_state.claim(db.engine, "b", now=now + 6, lease_s=5) is not None
    finding = Finding(
        rule_id="key-out-of-network",
        title="t",
        severity=Severity.HIGH,
        subject_kind="credential",
        subject_id="k1",
        reason="credential.out_of_network",
        at=now,
    )
    with pytest.raises(DetectionLeaseLost), write_transaction(db.engine) as conn:
        alerts.record_in(conn, Verdict(finding, "key|credential|k1", True), now=now)
        detector_state.advance(
            conn,
            "a",
            expected=start.cursor,
            cursor=start.cursor + 1,
            state=b"",
            pending=None,
            now=now,
            lease_s=5,
        )
    assert db.alerts() == []
    # Nor can the new holder store from a cursor other than the stored one.
    with pytest.raises(DetectionLeaseLost), write_transaction(db.engine) as conn:
        detector_state.advance(
            conn,
            "b",
            expected=start.cursor + 7,
            cursor=start.cursor + 8,
            state=b"",
            pending=None,
            now=now,
            lease_s=5,
        )


# ── the worker ─────────────────────────────────────────────────────────────────────────────
def test_one_monitor_works_the_others_stand_by_and_a_stop_hands_over(db: Db) -> None:
    first, second = db.monitor("replica-1"), db.monitor("replica-2")
    with running(first, second):
        worker = wait_for(lambda: next((m for m in (first, second) if m.active), None), "a worker")
        standby = second if worker is first else first
        for _ in range(20):  # never two at once
            assert [first.active, second.active].count(True) == 1
            time.sleep(0.05)
        now = time.time()
        db.append(out_of_network("k1", now), out_of_network("k2", now))
        wait_for(lambda: db.alerts() == [("k1", 1), ("k2", 1)], "alerts from the log")
        assert standby.processed == 0
        stopped_at = time.monotonic()
        worker.stop()
        wait_for(lambda: standby.active, "the standby taking over")
        handover = time.monotonic() - stopped_at
        assert handover < monitor_mod.DETECT_STANDBY_POLL_S + 2.0, handover
        print(f"handover after a stop ({db.kind}): {handover:.2f} s")
        # It continues from the stored cursor: old rows are not judged again, new ones are.
        db.append(out_of_network("k1", now + 1), out_of_network("k3", now + 1))
        wait_for(lambda: db.alerts() == [("k1", 2), ("k2", 1), ("k3", 1)], "alerts after")
    assert db.raised() == ["k1", "k2", "k3"]


def test_a_stalled_worker_is_replaced_and_its_range_stored_once(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker stalls mid-range (judged, not yet stored) past its lease: a standby takes
    over from the stored cursor and state and judges the range; when the stalled one wakes,
    its commit is refused (fenced) — every row's alert once, and a repeat across the
    handover counts as a repeat (the dedup state was handed over)."""
    monkeypatch.setattr(monitor_mod, "DETECT_LEASE_S", 1.0)
    monkeypatch.setattr(monitor_mod, "DETECT_RENEW_S", 0.2)
    awake = threading.Event()
    awake.set()

    def stalling_facts() -> Snapshot:
        awake.wait(GUARD_S)
        return Snapshot.empty()

    first = db.monitor("replica-1", stalling_facts)
    second = db.monitor("replica-2")
    with running(first):
        wait_for(lambda: first.active, "the first worker")
        now = time.time()
        db.append(*(out_of_network(f"k{n}", now) for n in range(5)))
        wait_for(lambda: len(db.alerts()) == 5, "five alerts")
        awake.clear()  # the next range stalls before it is stored
        db.append(*(out_of_network(f"k{n}", now + 1) for n in range(5, 8)))
        with running(second):
            wait_for(lambda: second.active, "the standby taking over")
            wait_for(lambda: len(db.alerts()) == 8, "the stalled range judged by the successor")
            awake.set()  # the stalled worker judges the same range and tries to store it
            wait_for(lambda: not first.active, "the stalled worker standing down")
            db.append(out_of_network("k0", now + 2), out_of_network("k9", now + 2))
            wait_for(lambda: len(db.alerts()) == 9, "the rest")
            assert dict(db.alerts())["k0"] == 2  # a repeat, not a second alert
            assert not first.active and second.active
    assert db.raised() == sorted(f"k{n}" for n in range(10) if n != 8)


def stored(db: Db) -> tuple[int, bytes | None]:
    t = schema.detector_state
    with db.engine.connect() as conn:
        cursor, state = conn.execute(sa.select(t.c.cursor, t.c.state)).one()
    return int(cursor), state


def test_cursor_and_state_are_stored_while_events_flow_without_findings(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_mod, "DETECT_STATE_EVERY_S", 0.3)
    worker = db.monitor("replica-1")
    with running(worker):
        wait_for(lambda: worker.active, "the worker")
        start, _ = stored(db)
        quiet = AuditEvent(EventName.GATEWAY_STARTED, at=time.time(), actor="x", data={})
        db.append(quiet, quiet)
        wait_for(lambda: stored(db)[0] == start + 2, "the cursor stored", within=5.0)
        assert stored(db)[1]  # with the state as of it
    assert db.alerts() == []


def test_pending_playbooks_of_a_dead_worker_run_on_takeover(db: Db) -> None:
    """An alert stored by a worker that died before acting on it: its successor runs the
    playbooks and notices (an alert whose actions are recorded is not acted on twice)."""
    now = time.time()
    claimed = detector_state.claim(db.engine, "dead", now=now, lease_s=0.01)
    assert claimed is not None
    finding = Finding(
        rule_id="key-multi-network",
        title="shared key",
        severity=Severity.HIGH,
        subject_kind="credential",
        subject_id="k-gone",
        reason="credential.multi_network",
        at=now,
    )
    from garrison.respond import worker_state

    with write_transaction(db.engine) as conn:
        alert_id, _ = alerts.record_in(conn, Verdict(finding, "x|credential|k-gone", True), now=now)
        detector_state.advance(
            conn,
            "dead",
            expected=claimed.cursor,
            cursor=claimed.cursor,
            state=b"",
            pending=[worker_state.finding_to_dict(alert_id, finding)],
            now=now,
            lease_s=0.01,
        )
    time.sleep(0.05)
    successor = db.monitor("replica-2")
    with running(successor):
        wait_for(lambda: successor.active, "the successor")

        def acted() -> bool:
            with db.engine.connect() as conn:
                return bool(alerts.show_alert(conn, alert_id)["actions"])

        wait_for(acted, "the playbook (contain-shared-key) run by the successor")

        def cleared() -> bool:
            with db.engine.connect() as conn:
                row = conn.execute(sa.select(schema.detector_state.c.pending)).scalar_one()
            return bool(orjson.loads(row) == [])

        wait_for(cleared, "the pending list cleared")


# ── the feed ───────────────────────────────────────────────────────────────────────────────
def test_a_batch_ahead_of_the_cursor_reads_the_rows_before_it_from_the_log(db: Db) -> None:
    now = time.time()
    db.append(out_of_network("a", now), out_of_network("b", now))
    with db.engine.connect() as conn:
        head = detector_state.head(conn)
    feed = LogFeed(db.engine)
    feed.restart(head - 2)
    own = [out_of_network("c", now)]
    items = feed.from_batch(head, own)  # a batch committed after the two rows
    assert [seq for seq, _ in items] == [head - 1, head, head + 1]
    assert [o.key for _, o in items if o is not None] == ["a", "b", "c"]
    assert feed.cursor == head + 1
    assert feed.from_batch(head, own) == []  # already taken: skipped


def test_one_take_judges_every_batch_queued_since_the_last(db: Db) -> None:
    """The worker lingers DETECT_LINGER_S after judging; the commits of that time are then
    taken together (one wake-up), in order, and a stop queued among them still stops."""
    now = time.time()
    with db.engine.connect() as conn:
        head = detector_state.head(conn)
    feed = LogFeed(db.engine)
    feed.restart(head)
    feed.offer(head, [out_of_network("a", now)])
    feed.offer(head + 1, [out_of_network("b", now), out_of_network("c", now)])
    feed.offer(head + 3, [out_of_network("d", now)])
    items = feed.take(0.01)
    assert items is not None
    assert [seq for seq, _ in items] == [head + 1, head + 2, head + 3, head + 4]
    assert [o.key for _, o in items if o is not None] == ["a", "b", "c", "d"]
    feed.offer(head + 4, [out_of_network("e", now)])
    feed.wake()
    feed.offer(head + 5, [out_of_network("f", now)])
    items = feed.take(0.01)
    assert items is not None and [o.key for _, o in items if o is not None] == ["e"]
    assert feed.take(0.01) is None  # the stop taken while draining


def test_a_missing_row_is_waited_for_then_stepped_over(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = out_of_network("x", 1.0)
    rows = [(1, record.encode(0)), (3, record.encode(2))]
    monkeypatch.setattr(detector_state, "records_after", lambda conn, cursor, limit: rows)
    # The feed's clock, moved by the test (a 0.2 s wait in real time assumed the two reads
    # before it were less than 0.2 s apart).
    now = [1000.0]
    monkeypatch.setattr(log_feed, "time", SimpleNamespace(monotonic=lambda: now[0]))
    feed = LogFeed(db.engine)
    assert [seq for seq, _ in feed.from_log(10)] == [1]  # row 2 not committed yet: wait
    rows.pop(0)
    assert feed.from_log(10) == []
    now[0] = 1000.0 + log_feed.DETECT_GAP_WAIT_S - 0.5
    assert feed.from_log(10) == []  # still waited for
    now[0] = 1000.0 + log_feed.DETECT_GAP_WAIT_S
    items = feed.from_log(10)
    assert [seq for seq, _ in items] == [3]  # stepped over after DETECT_GAP_WAIT_S
    assert isinstance(items[0][1], Obs)


# ── end to end: gateways on one database ───────────────────────────────────────────────────
async def call(port: int, key: str, addr: str) -> int:
    status, _ = await chat_from(f"http://127.0.0.1:{port}", key, addr, content="hi")
    return status


async def call_ok(port: int, key: str, addr: str) -> int:
    """``call``, again while the answer is 503: a SQLite log busy past the writer's timeout
    refuses calls (fail closed) for a moment after a process is killed mid-write, and this
    test is about detection, not that refusal."""
    for _ in range(10):
        status = await call(port, key, addr)
        if status != 503:
            return status
        await asyncio.sleep(0.2)
    return status


async def service_keys(world: World, n: int) -> list[tuple[str, str]]:
    """``n`` keys of a new service account, made through the admin API: (secret, key id)."""
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": "svc", "org": "internal", "kind": "service"},
    )
    assert status == 201, body
    keys = []
    for _ in range(n):
        status, issued = await admin_call(
            world, world.admin_key, "POST", "/keys", {"principal": "svc"}
        )
        assert status == 201, issued
        keys.append((issued["key"], issued["id"]))
    await world.reload()
    return keys


def shared_key_alerts(world: World) -> dict[str, int]:
    """Key id → multi-network alerts raised for it (``alert.raised`` events in the log)."""
    counts: dict[str, int] = {}
    for event in world.events("alert.raised"):
        if event["data"]["rule_id"] == "key-multi-network":
            subject = event["data"]["subject"]["id"]
            counts[subject] = counts.get(subject, 0) + 1
    return counts


async def eventually(check: Callable[[], Any], what: str, within: float = GUARD_S) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_a_key_used_from_two_networks_through_two_gateways_is_caught_once(
    world: World,
) -> None:
    other = Gateway(dataclasses.replace(world.settings, port=0))
    await other.start()
    try:
        monitors = [g.monitor for g in (world.gateway, other)]
        assert all(m is not None for m in monitors)
        await eventually(lambda: [m.active for m in monitors if m].count(True) == 1, "a worker")
        keys = await service_keys(world, 2)
        await other.reload()
        (mixed, mixed_id), (elsewhere, elsewhere_id) = keys
        # One call through each gateway; and one key used only through the standby.
        standby = other if world.gateway.monitor and world.gateway.monitor.active else world.gateway
        assert await call(world.gateway.port, mixed, HOME) == 200
        assert await call(other.port, mixed, AWAY) == 200
        assert await call(standby.port, elsewhere, HOME) == 200
        assert await call(standby.port, elsewhere, AWAY) == 200
        await eventually(
            lambda: shared_key_alerts(world) == {mixed_id: 1, elsewhere_id: 1}, "both caught"
        )
        await asyncio.sleep(2 * monitor_mod.DETECT_RENEW_S)
        assert shared_key_alerts(world) == {mixed_id: 1, elsewhere_id: 1}  # once each
    finally:
        await other.stop()


@pytest.mark.e2e
async def test_a_window_spanning_a_restart_still_fires(world: World) -> None:
    ((key, key_id),) = await service_keys(world, 1)
    assert await call(world.gateway.port, key, HOME) == 200
    await world.settle()
    await world.gateway.stop()  # the detectors' windows are stored with the cursor
    world.gateway = Gateway(world.settings)
    await world.gateway.start()
    assert await call(world.gateway.port, key, AWAY) == 200
    await eventually(lambda: shared_key_alerts(world) == {key_id: 1}, "the shared key caught")


def _holder(db_path: Path) -> tuple[str | None, float]:
    conn = sqlite3.connect(db_path)
    try:
        row = conn.execute("SELECT holder, lease_until FROM detector_state").fetchone()
    except sqlite3.OperationalError:
        return None, 0.0
    finally:
        conn.close()
    return (row[0], float(row[1])) if row else (None, 0.0)


async def _listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker gateway exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("the worker gateway never listened")


KEYS_KILLED = 24


@pytest.mark.e2e
async def test_the_worker_killed_mid_stream_is_replaced_and_no_alert_is_missed_or_doubled(
    tmp_path: Path,
) -> None:
    world = await start_world(tmp_path, detect=False)  # serves calls; detects nothing
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env["GARRISON_PORT"] = str(port)
    log_file = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [*GARRISON, "serve", "--config", str(world.root / "data" / "garrison.toml")],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    standby: Gateway | None = None
    try:
        await _listening(port, worker)
        await eventually(lambda: _holder(world.db_path)[0], "the subprocess elected worker")
        (worker_id, _) = _holder(world.db_path)
        standby = Gateway(dataclasses.replace(world.settings, port=0, detect_enabled=True))
        await standby.start()
        assert standby.monitor is not None
        await asyncio.sleep(1.0)
        assert not standby.monitor.active  # the subprocess holds the lease
        keys = await service_keys(world, KEYS_KILLED)
        await standby.reload()
        gateways = [world.gateway.port, port, standby.port]
        half = KEYS_KILLED // 2
        # The first half: each key from two networks, through different gateways.
        for n, (key, _) in enumerate(keys[:half]):
            assert await call_ok(gateways[n % 3], key, HOME) == 200
            assert await call_ok(gateways[(n + 1) % 3], key, AWAY) == 200
        # Mid-stream: calls in flight through the two survivors as the worker dies.
        mid = [call_ok(gateways[0], key, HOME) for key, _ in keys[half:]]
        results = asyncio.gather(*mid)
        await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        before_kill = len(shared_key_alerts(world))
        worker.wait(timeout=30)
        assert set(await results) == {200}
        await eventually(
            lambda: standby is not None and standby.monitor is not None and standby.monitor.active,
            "takeover",
        )
        takeover = time.monotonic() - killed_at
        assert takeover <= monitor_mod.DETECT_LEASE_S + monitor_mod.DETECT_STANDBY_POLL_S + 2.0
        for n, (key, _) in enumerate(keys[half:]):
            survivor = gateways[0] if n % 2 else gateways[2]
            assert await call_ok(survivor, key, AWAY) == 200
        expected = {key_id: 1 for _, key_id in keys}
        await eventually(lambda: shared_key_alerts(world) == expected, "every key caught", 60)
        await asyncio.sleep(2 * monitor_mod.DETECT_RENEW_S)
        assert shared_key_alerts(world) == expected  # none twice
        assert _holder(world.db_path)[0] != worker_id
        print(f"takeover after SIGKILL: {takeover:.2f} s ({before_kill} alerts before it)")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        log_file.close()
        if standby is not None:
            await standby.stop()
        await stop_world(world)
