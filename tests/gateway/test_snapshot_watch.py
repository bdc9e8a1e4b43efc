"""The snapshot watcher's reading of the change feed: how often it reads the version (every
tick, or the slower fallback while LISTEN is healthy), that a read in a worker thread which
does not answer fails instead of holding the watcher, and that a notification — only a hint,
which any database role may send — reads the version at once and reloads only if it
changed, at most one read per ``NOTIFIED_READ_MIN_S`` however many arrive."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from garrison.gateway.limits import GatewayLimits
from garrison.serve import snapshots as watcher_module
from garrison.serve.snapshots import (
    NOTIFIED_READ_MIN_S,
    PROBE_WAIT_S,
    SNAPSHOT_POLL_LISTENING_S,
    SNAPSHOT_POLL_S,
    Snapshots,
)

# Longest a wake may take to lead to a reload when the tick is an hour (a bounded wait).
WAKE_WITHIN_S = 10.0


class FakeProbe:
    def __init__(self, *, in_thread: bool, hang: threading.Event | None = None) -> None:
        self.in_thread = in_thread
        self.reads = 0
        self.hang = hang
        self.value = 0

    def version(self) -> int:
        self.reads += 1
        if self.hang is not None:
            self.hang.wait(10)
        return self.value

    def close(self) -> None:
        pass


class FakeListener:
    def __init__(self, wake: Any) -> None:
        self.wake = wake
        self.healthy = True
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def _snapshots(probe: FakeProbe, *, stale_s: float = 5.0, listener: Any = None) -> Snapshots:
    state: Any = SimpleNamespace(
        limits=GatewayLimits(lock_view_stale_s=stale_s),
        snapshot=SimpleNamespace(version=0, orgs={}),
        live=set(),
        lock_view_at=0.0,
    )
    return Snapshots(
        state,
        engine=None,  # type: ignore[arg-type]
        pepper=b"",
        sealer=None,  # type: ignore[arg-type]
        probe=probe,
        listener=listener,
        overlay=list,
        monitor=None,
        clock=time.time,
        monotonic=time.monotonic,
    )


def test_without_a_listener_the_version_is_read_every_tick() -> None:
    snaps = _snapshots(FakeProbe(in_thread=False))
    assert snaps._poll_interval() == 0.0


def test_a_healthy_listener_slows_the_fallback_poll_and_a_lost_one_restores_it() -> None:
    snaps = _snapshots(FakeProbe(in_thread=True))
    listener = FakeListener(None)
    snaps.listener = listener  # type: ignore[assignment]
    assert snaps._poll_interval() == SNAPSHOT_POLL_LISTENING_S
    listener.healthy = False
    assert snaps._poll_interval() == 0.0


def test_the_fallback_poll_stays_well_inside_the_staleness_limit() -> None:
    assert GatewayLimits().lock_view_stale_s >= SNAPSHOT_POLL_LISTENING_S * 4
    snaps = _snapshots(FakeProbe(in_thread=True), stale_s=0.4)
    snaps.listener = FakeListener(None)  # type: ignore[assignment]
    assert snaps._poll_interval() == pytest.approx(0.1)  # a quarter of a short limit


async def test_a_read_that_does_not_answer_fails_and_is_not_started_twice() -> None:
    hang = threading.Event()
    probe = FakeProbe(in_thread=True, hang=hang)
    snaps = _snapshots(probe)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await snaps.read_version()
        assert PROBE_WAIT_S * 0.9 <= time.monotonic() - t0 < PROBE_WAIT_S * 5
        with pytest.raises(TimeoutError):
            await snaps.read_version()
        assert probe.reads == 1  # the hung read is waited on, not joined by a second
    finally:
        hang.set()
    assert await snaps.read_version() == 0  # the late answer is used once it comes


async def test_a_notification_of_a_change_reloads_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = FakeProbe(in_thread=True)
    probe.value = 1  # the feed moved past the snapshot (version 0)
    made: list[FakeListener] = []

    def make(wake: Any) -> FakeListener:
        made.append(FakeListener(wake))
        return made[-1]

    snaps = _snapshots(probe, listener=make)
    reloads: list[float] = []

    async def reload() -> None:
        reloads.append(time.monotonic())

    monkeypatch.setattr(snaps, "reload", reload)
    monkeypatch.setattr(watcher_module, "SNAPSHOT_POLL_S", 3600.0)  # only a wake can end a tick
    task = asyncio.create_task(snaps.watch())
    try:
        while not made:
            await asyncio.sleep(0.001)
        assert made[0].started
        made[0].wake()  # as the listener does, from its thread
        # The tick is an hour long: a reload within WAKE_WITHIN_S is the wake's doing (not
        # measured against a 50 ms tick, which a loaded machine's worker-thread read outlasts).
        deadline = time.monotonic() + WAKE_WITHIN_S
        while not reloads:
            assert time.monotonic() < deadline, "the wake did not reload"
            await asyncio.sleep(0.001)
        assert probe.reads == 1  # the hint was checked against the feed first
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert made[0].stopped and snaps.listener is None


async def test_a_failed_reload_is_followed_by_a_read_on_the_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = FakeProbe(in_thread=True)
    probe.value = 7  # newer than the snapshot: the read leads to a reload
    made: list[FakeListener] = []

    def make(wake: Any) -> FakeListener:
        made.append(FakeListener(wake))
        return made[-1]

    snaps = _snapshots(probe, listener=make)
    attempts: list[float] = []

    async def reload() -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise OSError("database unreachable")

    monkeypatch.setattr(snaps, "reload", reload)
    task = asyncio.create_task(snaps.watch())
    try:
        while not made:
            await asyncio.sleep(0.001)
        made[0].wake()
        deadline = time.monotonic() + 10 * SNAPSHOT_POLL_S + 1.0
        while len(attempts) < 2:
            assert time.monotonic() < deadline, "no second attempt"
            await asyncio.sleep(0.005)
        # Not the 1 s fallback: the tick after the failure read the version again.
        assert probe.reads >= 1
        assert attempts[1] - attempts[0] < SNAPSHOT_POLL_LISTENING_S
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_flood_of_notifications_reads_the_version_boundedly_and_never_reloads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Red team (issue 17): any role that can connect may NOTIFY the channel; a flood of
    notifications with nothing changed costs a bounded number of version reads and no
    reload, and a real change arriving in the middle of it is loaded at once."""
    probe = FakeProbe(in_thread=False)
    made: list[FakeListener] = []

    def make(wake: Any) -> FakeListener:
        made.append(FakeListener(wake))
        return made[-1]

    snaps = _snapshots(probe, listener=make)
    reloads: list[float] = []
    reads_at_reload: list[int] = []

    async def reload() -> None:
        reloads.append(time.monotonic())
        reads_at_reload.append(probe.reads)
        snaps.state.snapshot = SimpleNamespace(version=probe.value, orgs={})  # type: ignore[assignment]

    monkeypatch.setattr(snaps, "reload", reload)
    monkeypatch.setattr(watcher_module, "SNAPSHOT_POLL_S", 3600.0)  # only a wake ends a tick
    stop = threading.Event()

    def flood() -> None:  # the listener's thread, woken by every notification
        while not stop.wait(0.00005):
            for _ in range(100):
                made[0].wake()

    task = asyncio.create_task(snaps.watch())
    try:
        while not made:
            await asyncio.sleep(0.001)
        flooder = threading.Thread(target=flood, daemon=True)
        t0 = time.monotonic()
        flooder.start()
        await asyncio.sleep(0.5)
        assert reloads == []  # nothing changed: nothing loaded
        probe.value = 1  # a real change, and its notification among the others
        changed_at = time.monotonic()
        reads_at_change = probe.reads
        while not reloads:
            assert time.monotonic() - changed_at < 1.0, "the change was not loaded"
            await asyncio.sleep(0.001)
        # Loaded by the very next read (the reads are in this loop: none was under way at
        # the change), not after some: counted in reads, not in milliseconds, which a loaded
        # machine stretches (a bound of 2 * NOTIFIED_READ_MIN_S + 50 ms was).
        assert reads_at_reload[0] == reads_at_change + 1, (reads_at_change, reads_at_reload)
        await asyncio.sleep(0.5)
        stop.set()
        flooder.join()
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    flooder.join(5)
    assert len(reloads) == 1
    # One read per spacing at most (plus the first, which waits for none).
    assert 2 <= probe.reads <= elapsed / NOTIFIED_READ_MIN_S + 2, probe.reads


# The steps of the event loop between the wake and the stop that the race is tried at (on
# Python 3.11 ``asyncio.wait_for`` lost the cancellation at 0, 1 and 2).
RACE_STEPS = range(4)


@pytest.mark.parametrize("steps", RACE_STEPS)
async def test_a_stop_that_coincides_with_a_wake_stops_the_watcher(steps: int) -> None:
    """A change notification (PostgreSQL's LISTEN) wakes the watcher just as the gateway
    stops: the cancellation must end the watch loop, not be swallowed by the wait (the loop
    then ran on and ``Gateway.stop`` waited for it forever: a suite run hung in teardown)."""
    woken = asyncio.Event()

    async def watch() -> None:
        while True:
            await watcher_module.woken_within(woken, 10.0)
            woken.clear()

    task = asyncio.create_task(watch())
    await asyncio.sleep(0)
    woken.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert done == {task} and task.cancelled()


async def test_the_wait_still_ends_at_its_timeout_and_at_a_wake() -> None:
    woken = asyncio.Event()
    started = time.monotonic()
    await watcher_module.woken_within(woken, 0.05)
    assert 0.04 <= time.monotonic() - started < 1.0
    asyncio.get_running_loop().call_later(0.01, woken.set)
    started = time.monotonic()
    await watcher_module.woken_within(woken, 10.0)
    assert woken.is_set() and time.monotonic() - started < 1.0
