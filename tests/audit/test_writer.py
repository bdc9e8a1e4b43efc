"""The durable group-commit writer: durability before return, fail closed, nothing lost."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.audit import ENCODING_VERSION, AuditEvent, EventName, decode
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.writer import (
    AUDIT_BATCH_MAX,
    AUDIT_LAZY_FLUSH_S,
    AUDIT_OUTBOX_POLL_S,
    AUDIT_RIDE_ALONG_S,
    AuditLog,
)
from garrison.errors import AuditRecordInvalid, AuditUnavailable
from garrison.store import make_engine, migrate


def _event(i: int, name: EventName = EventName.REQUEST_ALLOWED) -> AuditEvent:
    return AuditEvent(name, at=1000.0 + i, request_id=f"r{i}", data={"i": i})


class FlakySink:
    """Fails while ``broken`` is set; records every committed batch."""

    def __init__(self) -> None:
        self.broken = threading.Event()
        self.batches: list[list[AuditEvent]] = []

    def open(self) -> None:
        pass

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        if self.broken.is_set():
            raise OSError("disk gone")
        self.batches.append(list(events))

    checkpoint_due = False

    def checkpoint(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def written(self) -> list[AuditEvent]:
        return [e for batch in self.batches for e in batch]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


def _rows(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT record FROM audit_events ORDER BY seq")]
    finally:
        conn.close()


async def test_append_returns_only_after_the_row_is_committed(db: Path) -> None:
    log = AuditLog(SqliteAuditSink(db))
    log.start()
    try:
        await log.append(_event(1))
        # A separate connection sees it: committed, not just buffered.
        assert [decode(r)["request_id"] for r in _rows(db)] == ["r1"]
    finally:
        log.close()


async def test_concurrent_appends_share_commits(db: Path) -> None:
    sink = FlakySink()
    log = AuditLog(sink)
    log.start()
    try:
        await asyncio.gather(*(log.append(_event(i)) for i in range(200)))
    finally:
        log.close()
    assert len(sink.written) == 200
    assert len(sink.batches) < 200  # group commit: fewer commits than events


async def test_append_later_is_committed_without_an_urgent_event(db: Path) -> None:
    log = AuditLog(SqliteAuditSink(db))
    log.start()
    try:
        log.append_later(_event(7, EventName.REQUEST_COMPLETED))
        for _ in range(100):
            if _rows(db):
                break
            await asyncio.sleep(0.01)
        assert [decode(r)["name"] for r in _rows(db)] == ["request.completed"]
    finally:
        log.close()


async def test_failed_write_refuses_waiters_and_keeps_unawaited_events() -> None:
    sink = FlakySink()
    log = AuditLog(sink)
    log.start()
    try:
        sink.broken.set()
        log.append_later(_event(1, EventName.REQUEST_DENIED))
        with pytest.raises(AuditUnavailable):
            await log.append(_event(2))
        assert not log.healthy
        sink.broken.clear()
        # Known down: appends are refused at once until the background probe finds the
        # sink writable again (within a few probe intervals).
        for _ in range(100):
            if log.healthy:
                break
            await asyncio.sleep(0.01)
        assert log.healthy
        await log.append(_event(3))
        for _ in range(100):
            if any(e.name is EventName.AUDIT_RECOVERED for e in sink.written):
                break
            await asyncio.sleep(0.01)
    finally:
        log.close()
    ids = [e.request_id for e in sink.written]
    assert "r1" in ids  # the queued refusal was retried, not lost
    assert "r2" not in ids  # the refused call's event was never claimed durable
    assert log.healthy
    assert any(e.name is EventName.AUDIT_RECOVERED for e in sink.written)


async def test_append_times_out_when_the_database_is_locked(db: Path) -> None:
    log = AuditLog(SqliteAuditSink(db), append_timeout=0.3)
    log.start()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AuditUnavailable):
            await log.append(_event(1))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        log.close()


async def test_append_deadline_reads_the_injected_monotonic_clock(db: Path) -> None:
    now = [0.0]
    log = AuditLog(SqliteAuditSink(db), append_timeout=3600.0, monotonic=lambda: now[0])
    log.start()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        pending = asyncio.ensure_future(log.append(_event(1)))
        await asyncio.sleep(0.05)
        assert not pending.done()  # an hour to go on the injected clock
        now[0] = 7200.0
        with pytest.raises(AuditUnavailable):
            await asyncio.wait_for(pending, 5)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        log.close()


async def test_full_queue_is_refused_not_grown() -> None:
    sink = FlakySink()
    sink.broken.set()
    log = AuditLog(sink, queue_max=3)
    log.start()
    try:
        for i in range(3):
            log.append_later(_event(i))
        with pytest.raises(AuditUnavailable):
            log.append_later(_event(99))
    finally:
        sink.broken.clear()
        log.close()


async def test_close_flushes_everything_queued(db: Path) -> None:
    log = AuditLog(SqliteAuditSink(db))
    log.start()
    for i in range(50):
        log.append_later(_event(i, EventName.REQUEST_COMPLETED))
    log.close()
    assert len(_rows(db)) == 50


def test_encoding_is_deterministic_versioned_and_indexed() -> None:
    a = AuditEvent(EventName.REQUEST_DENIED, at=1.5, data={"b": 1, "a": 2})
    assert a.encode(3) == a.encode(3)
    assert a.encode(3).startswith(b'{"actor":null,"at":1.5,')  # top-level keys sorted
    record = decode(a.encode(3))
    assert record["v"] == ENCODING_VERSION == 2
    assert record["name"] == "request.denied" and record["i"] == 3
    assert b" " not in a.encode(3)


# ── one bad event fails alone ──────────────────────────────────────────────────────────────
def _whole_record(event: AuditEvent, index: int) -> bytes:
    """The record as it was encoded before events were encoded at append time."""
    return orjson.dumps(
        {
            "actor": event.actor,
            "at": event.at,
            "credential_id": event.credential_id,
            "data": event.data,
            "i": index,
            "model": event.model,
            "name": event.name.value,
            "principal_id": event.principal_id,
            "request_id": event.request_id,
            "v": ENCODING_VERSION,
        }
    )


@pytest.mark.parametrize("index", [0, 7, 10**12])
def test_an_event_encoded_at_append_gives_the_same_bytes_as_before(index: int) -> None:
    event = AuditEvent(
        EventName.REQUEST_ALLOWED,
        at=1700000000.123456,
        actor="prn_1",
        request_id="r",
        principal_id="prn_1",
        credential_id="k",
        model="m",
        # Inside data, the very text that marks the index at the top level.
        data={"z": [1, {"i": 0, "model": "x"}], "a": "é\u2028", "i": 0, "model": 5},
    )
    prepared = event.prepare()
    assert prepared.encode(index) == _whole_record(event, index) == event.encode(index)
    assert prepared == event  # the cached record is not part of the event's identity


def test_an_unencodable_event_is_refused_when_appended() -> None:
    bad = AuditEvent(EventName.REQUEST_ALLOWED, at=1.0, data={"justification": "a\udcffb"})
    with pytest.raises(AuditRecordInvalid):
        bad.prepare()
    assert not issubclass(AuditRecordInvalid, AuditUnavailable)  # fail-open must not forward


async def test_an_unencodable_event_fails_alone_and_the_batch_commits(db: Path) -> None:
    log = AuditLog(SqliteAuditSink(db))
    log.start()
    try:
        bad = AuditEvent(EventName.REQUEST_ALLOWED, at=1.0, data={"justification": "\udcff"})
        late_bad = AuditEvent(EventName.REQUEST_DENIED, at=1.0, data={"big": 2**70})
        with pytest.raises(AuditRecordInvalid):
            log.append_later(late_bad)
        results = await asyncio.gather(
            *(log.append(_event(i)) for i in range(20)),
            log.append(bad),
            *(log.append(_event(i)) for i in range(20, 40)),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results].count("AuditRecordInvalid") == 1
        assert isinstance(results[20], AuditRecordInvalid)
        assert all(r is None for i, r in enumerate(results) if i != 20)
        assert log.healthy and log.failures == 0
        assert [decode(r)["request_id"] for r in _rows(db)] == [f"r{i}" for i in range(40)]
    finally:
        log.close()


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    [',"i":0,"model":', '"i":0', "\\", '"']
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    data=st.dictionaries(st.sampled_from(["i", "model", "v", "x", "data"]) | _TEXT, _JSON),
    text=st.none() | _TEXT,
    index=st.integers(0, 2**40),
)
def test_the_spliced_record_is_the_whole_record_for_any_event(
    data: dict[str, object], text: str | None, index: int
) -> None:
    event = AuditEvent(
        EventName.REQUEST_DENIED,
        at=1.25,
        actor=text,
        request_id=text,
        principal_id=text,
        credential_id=text,
        model=text,
        data=data,
    )
    assert event.prepare().encode(index) == _whole_record(event, index)


# ── outcomes ride along (AUDIT_RIDE_ALONG_S) ──────────────────────────────────────────────
class FrozenClock:
    """The writer's monotonic clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the wait"
        await asyncio.sleep(0.005)


async def test_an_outcome_waits_for_the_next_urgent_event_and_shares_its_commit() -> None:
    sink, clock = FlakySink(), FrozenClock()
    log = AuditLog(sink, monotonic=clock)
    log.start()
    try:
        log.append_later(_event(1, EventName.REQUEST_COMPLETED))
        # The clock has not moved past the flush delay: the writer was not woken for it,
        # and its idle ticks (every AUDIT_OUTBOX_POLL_S) leave it queued.
        await asyncio.sleep(4 * AUDIT_OUTBOX_POLL_S)
        assert sink.batches == []
        await log.append(_event(2))
        assert [[e.request_id for e in b] for b in sink.batches] == [["r1", "r2"]]
    finally:
        log.close()


async def test_an_outcome_alone_is_committed_once_the_flush_delay_has_passed() -> None:
    sink, clock = FlakySink(), FrozenClock()
    log = AuditLog(sink, monotonic=clock)
    log.start()
    try:
        log.append_later(_event(1, EventName.REQUEST_COMPLETED))
        await asyncio.sleep(2 * AUDIT_OUTBOX_POLL_S)
        clock.now += AUDIT_LAZY_FLUSH_S  # a refusal's delay is not an outcome's
        await asyncio.sleep(2 * AUDIT_OUTBOX_POLL_S)
        assert sink.batches == []
        clock.now += AUDIT_RIDE_ALONG_S
        await _until(lambda: bool(sink.batches))  # at the writer's next tick at the latest
        assert [e.request_id for e in sink.written] == ["r1"]
    finally:
        log.close()


async def test_a_full_batch_of_outcomes_is_committed_without_waiting() -> None:
    sink, clock = FlakySink(), FrozenClock()
    log = AuditLog(sink, monotonic=clock)
    log.start()
    try:
        for i in range(AUDIT_BATCH_MAX):
            log.append_later(_event(i, EventName.REQUEST_COMPLETED))
        await _until(lambda: len(sink.written) == AUDIT_BATCH_MAX)  # the clock never moved
    finally:
        log.close()


async def test_a_refusal_wakes_the_writer_and_is_committed_after_the_short_delay() -> None:
    """Refusals are not recovered after a crash as outcomes are: they keep the short window."""
    sink, clock = FlakySink(), FrozenClock()
    log = AuditLog(sink, monotonic=clock)
    log.start()
    try:
        log.append_later(_event(1, EventName.REQUEST_DENIED))
        log.append_later(_event(2, EventName.REQUEST_DENIED))
        await asyncio.sleep(2 * AUDIT_OUTBOX_POLL_S)
        assert sink.batches == []  # concurrent refusals wait the short delay to share a commit
        clock.now += AUDIT_LAZY_FLUSH_S
        await _until(lambda: bool(sink.batches), seconds=1.0)
        assert [[e.request_id for e in b] for b in sink.batches] == [["r1", "r2"]]
    finally:
        log.close()


async def test_an_append_is_acknowledged_once_durable_before_its_records_are_handed_on(
    db: Path,
) -> None:
    """The caller waits for the commit only; listeners (detection) and exporters get the
    records right after, on the writer thread, before it takes the next batch (leaf order)."""
    sink = SqliteAuditSink(db)
    release = threading.Event()
    seen: list[tuple[int, str | None]] = []

    def listener(first: int, events: Sequence[AuditEvent]) -> None:
        assert release.wait(5)
        seen.extend((first + k, e.request_id) for k, e in enumerate(events))

    sink.add_listener(listener)
    log = AuditLog(sink)
    log.start()
    try:
        await asyncio.wait_for(log.append(_event(1)), 5)  # the listener is still held
        assert [decode(r)["request_id"] for r in _rows(db)] == ["r1"]
        assert seen == []
        second = asyncio.ensure_future(log.append(_event(2)))
        await asyncio.sleep(0.1)
        assert not second.done()  # not taken before the first batch is handed on
        release.set()
        await asyncio.wait_for(second, 5)
        await _until(lambda: len(seen) == 2)
        assert seen == [(0, "r1"), (1, "r2")]
    finally:
        release.set()
        log.close()


async def test_integrate_returns_only_once_the_records_are_handed_on(db: Path) -> None:
    """``integrate`` promises the records were seen by the listeners too, not just durable:
    in a batch shared with an append, the append is acknowledged first, ``integrate`` after
    the hand-on."""
    sink = SqliteAuditSink(db)
    gates = [threading.Event(), threading.Event()]
    seen: list[str | None] = []

    def listener(first: int, events: Sequence[AuditEvent]) -> None:
        assert gates[min(len(seen), 1)].wait(5)
        seen.extend(e.request_id for e in events)

    sink.add_listener(listener)
    log = AuditLog(sink)
    log.start()
    try:
        # The first batch's hand-on holds the writer, so the next two share a batch.
        await asyncio.wait_for(log.append(_event(1)), 5)
        waiting = asyncio.ensure_future(log.integrate())
        appended = asyncio.ensure_future(log.append(_event(2)))
        await asyncio.sleep(0.05)
        gates[0].set()
        await asyncio.wait_for(appended, 5)
        await asyncio.sleep(0.1)
        assert not waiting.done()  # durable, but not handed on yet
        assert seen == ["r1"]
        gates[1].set()
        await asyncio.wait_for(waiting, 5)
        assert seen == ["r1", "r2"]
    finally:
        for gate in gates:
            gate.set()
        log.close()
