"""The snapshot in force: loading it (with its policy engine), swapping it in, and the
watcher that follows the change feed, runs the contract clock and re-checks live calls.

The watcher ticks every ``SNAPSHOT_POLL_S`` (the contract clock and the re-check of live
calls need no database). It reads the feed's version on every tick, except on PostgreSQL
while the change listener is healthy: a notification then wakes it at once, and it reads the
version only every ``SNAPSHOT_POLL_LISTENING_S`` as a fallback. A notification is only a
hint — any database role that can connect may ``NOTIFY`` the channel — so a wake reads the
version (an index lookup) and reloads only if it changed, and wakes are read at most once
per ``NOTIFIED_READ_MIN_S``: a flood of notifications costs a bounded number of reads and
no reload at all, while a real change still propagates at once. A lock
view that no read has refreshed for ``limits.lock_view_stale_s`` is stale
(``gateway.containment.stale_refusal``), whichever way the process was following."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable

import sqlalchemy as sa

from garrison.audit import AuditEvent
from garrison.audit.payloads_host import ClockAgreed, ClockJumped
from garrison.audit.writer import AuditLog
from garrison.detect.observation import Finding, Severity
from garrison.domain import VendorStatus
from garrison.domain.clock_guard import CLOCK_AGREE_S, ClockChange, ClockGuard
from garrison.domain.locks import Lock
from garrison.errors import AuditUnavailable
from garrison.gateway.containment import cut_covered
from garrison.gateway.state import GatewayState
from garrison.keyring import Sealer
from garrison.policy.engine import CompiledPolicies, PolicyEngine, PolicyError, build_entities
from garrison.respond.monitor import Monitor
from garrison.store import load_snapshot
from garrison.store.change_feed import ChangeListener, VersionProbe
from garrison.store.directory import Directory
from garrison.store.snapshot import Snapshot
from garrison.store.vendors import expire_ended_contracts

log = logging.getLogger("garrison.gateway")

# How often each process checks the change feed for directory writes. 50 ms keeps admin
# changes enforced well inside the 100 ms propagation target at one cheap query per tick.
SNAPSHOT_POLL_S = 0.05
# How often the feed's version is read while LISTEN/NOTIFY is healthy (PostgreSQL): only a
# fallback then, for a notification lost without the connection noticing. Well under the
# staleness limit (5 s by default), which only a successful read or reload keeps fresh.
SNAPSHOT_POLL_LISTENING_S = 1.0
# Least time between two version reads a notification asks for. A notification is a hint
# anyone who can connect may send: this bounds a flood to 50 reads a second (one index
# lookup each, a reload only when the version changed), and adds at most a fifth of the
# 100 ms propagation target to a real change.
NOTIFIED_READ_MIN_S = 0.02
# How long the watcher waits for a version read in a worker thread (PostgreSQL) before it
# counts the read as failed; a read still running is not started again.
PROBE_WAIT_S = 1.0


async def integrated(audit: AuditLog) -> None:
    """This process's directory changes (in the audit outbox) are in the tree, exported
    and seen by detection before it goes on; if the log is down they wait there."""
    with contextlib.suppress(AuditUnavailable):
        await audit.integrate()


async def woken_within(woken: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``woken`` is set or ``timeout_s`` passes. Not ``asyncio.wait_for``: on
    Python 3.11 it swallows a cancellation that arrives just after the event is set (the
    wait done, the waiting task not yet resumed), so a stop that coincided with a change
    notification on PostgreSQL left the watcher running and ``Gateway.stop`` waiting for
    it forever. ``asyncio.timeout`` delivers the cancellation."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await woken.wait()


class Snapshots:
    """Loads the directory's snapshot and policy engine into ``state`` and keeps them
    current; ``overlay`` gives the emergency locks not yet in the database."""

    def __init__(
        self,
        state: GatewayState,
        *,
        engine: sa.Engine,
        pepper: bytes,
        sealer: Sealer,
        probe: VersionProbe,
        listener: Callable[[Callable[[], None]], ChangeListener] | None = None,
        overlay: Callable[[], Iterable[Lock]],
        monitor: Monitor | None,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.state = state
        self.engine = engine
        self.pepper = pepper
        self.sealer = sealer
        self.probe = probe
        self.overlay = overlay
        self.monitor = monitor
        self.clock = clock
        self._monotonic = monotonic
        self.clock_guard = ClockGuard.start(clock(), monotonic())
        self._compiled: CompiledPolicies | None = None
        self._reloading = asyncio.Lock()
        # ``listener(wake)`` builds the change listener (PostgreSQL) that calls ``wake`` from
        # its thread; None: poll only.
        self._make_listener = listener
        self.listener: ChangeListener | None = None
        self._woken = asyncio.Event()
        self._probing: asyncio.Future[int] | None = None

    def load(self) -> tuple[Snapshot, PolicyEngine]:
        """A snapshot and its policy engine (in a worker thread: parsing takes milliseconds)."""
        snapshot = load_snapshot(self.engine, self.sealer)
        compiled = self._compiled
        if compiled is None or compiled.version != snapshot.policy_version:
            try:
                compiled = CompiledPolicies(snapshot.policy_text, version=snapshot.policy_version)
            except PolicyError as exc:
                if compiled is None:
                    # No valid set yet (first load): the base policies alone, and loudly.
                    log.error(
                        "organisation policy set %d refused: %s", snapshot.policy_version, exc
                    )
                    compiled = CompiledPolicies("", version=snapshot.policy_version)
                else:
                    log.error(
                        "organisation policy set %d refused; version %d stays in force: %s",
                        snapshot.policy_version,
                        compiled.version,
                        exc,
                    )
            self._compiled = compiled
        vendor_orgs = frozenset(o.id for o in snapshot.orgs.values() if o.vendor is not None)
        entities = build_entities(
            snapshot.principals.values(),
            snapshot.models.values(),
            {o.id: o.kind.value for o in snapshot.orgs.values()},
            vendor_orgs,
        )
        return snapshot, PolicyEngine(compiled, entities)

    async def reload(self) -> None:
        async with self._reloading:
            snapshot, policy = await asyncio.to_thread(self.load)
            overlay = list(self.overlay())
            if overlay:
                snapshot = dataclasses.replace(snapshot, locks=snapshot.locks.merged(overlay))
        # Reloads can overlap (the watcher, an admin write): never swap an older one in.
        if snapshot.version >= self.state.snapshot.version:
            # Swap and cut with no await between (see gateway.containment).
            self.state.snapshot = snapshot
            self.state.policy = policy
            self.state.lock_view_at = time.monotonic()
            cut_covered(self.state)

    def _wake_from_thread(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        def wake() -> None:
            # One pending wake is enough (a flood of notifications must not flood the loop);
            # reading the flag from this thread can only race into one extra call.
            if not self._woken.is_set() and not loop.is_closed():
                loop.call_soon_threadsafe(self._woken.set)

        return wake

    def _poll_interval(self) -> float:
        """How long between version reads: the tick, or the slower fallback while LISTEN
        is healthy (never more than a quarter of the staleness limit)."""
        listener = self.listener
        if listener is None or not listener.healthy:
            return 0.0
        return min(SNAPSHOT_POLL_LISTENING_S, self.state.limits.lock_view_stale_s / 4)

    async def read_version(self) -> int:
        """The feed's version: on the loop (SQLite, microseconds) or in a worker thread
        (PostgreSQL), never two reads at once; a read unanswered in ``PROBE_WAIT_S`` fails."""
        probe = self.probe
        if not probe.in_thread:
            return probe.version()
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(asyncio.to_thread(probe.version))
        done, _ = await asyncio.wait({self._probing}, timeout=PROBE_WAIT_S)
        if not done:
            raise TimeoutError("the change feed's version read did not answer")
        return self._probing.result()

    async def watch(self) -> None:
        if self._make_listener is not None and self.listener is None:
            self.listener = self._make_listener(self._wake_from_thread(asyncio.get_running_loop()))
            await asyncio.to_thread(self.listener.start)
        try:
            await self._watch()
        finally:
            if self.listener is not None:
                await asyncio.to_thread(self.listener.stop)
                self.listener = None

    async def _watch(self) -> None:
        last_read = self._monotonic()
        last_notified = -math.inf
        while True:
            await woken_within(self._woken, SNAPSHOT_POLL_S)
            woken = self._woken.is_set()
            if woken:
                # Notified (a commit, a listener that reconnected, or anyone's NOTIFY): wait
                # out the least spacing of notified reads; wakes meanwhile join this one.
                pause = last_notified + NOTIFIED_READ_MIN_S - self._monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            self._woken.clear()
            try:
                await self.contract_clock()
                now = self._monotonic()
                if woken or now - last_read >= self._poll_interval():
                    version = await self.read_version()
                    last_read = now
                    if woken:
                        last_notified = now
                    if version != self.state.snapshot.version:
                        await self.reload()
                        log.info(
                            "snapshot %d loaded%s",
                            self.state.snapshot.version,
                            " (notified)" if woken else "",
                        )
                    else:
                        self.state.lock_view_at = time.monotonic()
                # A lock with a TTL, or a contract, can end or start covering a call without
                # any write: re-check the live calls on every tick (cheap when none is live).
                cut_covered(self.state, redecide=False)
            except Exception as exc:  # keep watching; the old snapshot stays in force
                log.error("snapshot reload failed: %s", exc)
                last_read = -math.inf  # read again on the next tick, listener or not

    async def contract_clock(self) -> None:
        """Record a vendor's contract end as ``vendor.expired`` (actor: the contract clock).

        The data plane already refuses the vendor's people from the instant the contract
        ends (the snapshot carries the window); this only makes the directory and the log say
        so. Cheap: nothing is read unless a loaded contract has passed its end."""
        now = self.clock()
        change = self.clock_guard.observe(now, self._monotonic())
        if change is not ClockChange.NONE:
            await self._clock_changed(change, now)
        if self.clock_guard.paused:
            return  # the wall clock is not to be trusted: expire nothing until it is
        due = [
            org.name
            for org in self.state.snapshot.orgs.values()
            if org.vendor is not None
            and org.vendor.status in (VendorStatus.ACTIVE, VendorStatus.SUSPENDED)
            and org.vendor.contract_end <= now
        ]
        if due:
            directory = Directory(
                self.engine, actor="contract-clock", pepper=self.pepper, sealer=self.sealer
            )
            await asyncio.to_thread(expire_ended_contracts, directory, now)
            await integrated(self.state.audit)  # recorded before this process enforces it

    async def _clock_changed(self, change: ClockChange, now: float) -> None:
        skew = round(self.clock_guard.skew, 3)
        if change is ClockChange.JUMPED:
            log.error(
                "WALL CLOCK JUMPED by %.0f s against the monotonic clock: contract expiries "
                "paused until the two agree again for %.0f s (or restart to accept the time)",
                skew,
                CLOCK_AGREE_S,
            )
        else:
            log.warning("wall clock agrees again (skew %.3f s): contract expiries resume", skew)
        changed = (
            ClockJumped(skew_s=skew) if change is ClockChange.JUMPED else ClockAgreed(skew_s=skew)
        )
        self.state.audit.append_later(
            AuditEvent(
                changed.NAME,
                at=now,
                actor="contract-clock",
                data=changed.as_data(),
                payload=changed,
            )
        )
        if change is ClockChange.JUMPED and self.monitor is not None:
            finding = Finding(
                rule_id="clock-jump",
                title="The wall clock jumped: contract expiries are paused",
                severity=Severity.HIGH,
                subject_kind="gateway",
                subject_id="clock",
                reason="clock.jumped",
                at=now,
                data={"skew_s": skew},
            )
            await asyncio.to_thread(self.monitor.raise_finding, finding)
