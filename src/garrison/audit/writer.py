"""The durable audit append, with group commit.

One writer thread owns the database connection. Callers on the event loop hand it events:

* ``await log.append(event)`` returns once the event is committed (fsync'd). The data plane
  uses it for the event of an allowed call, *before* forwarding: if it raises
  ``AuditUnavailable`` the call is refused (fail closed).
* ``log.append_later(event)`` queues the event without waiting (outcomes, refusals). It is
  committed within ``AUDIT_LAZY_FLUSH_S``, sharing a commit with whatever else comes then;
  a call's outcome (``RIDES_ALONG``) waits for the next urgent commit instead, at most
  ``AUDIT_RIDE_ALONG_S``, without waking the writer. A failed write is retried, not dropped,
  while the queue has room.

Everything pending is committed as one transaction, so N concurrent callers share one fsync.
Directory changes reach the log through the audit outbox (``garrison.audit.sqlite_sink``):
every batch integrates waiting outbox rows first, and an idle writer looks for them every
``AUDIT_OUTBOX_POLL_S``; ``await log.integrate()`` (the admin API, after a change) returns
once every row waiting when it was called is in the tree and exported.
Each event is encoded when it is appended (all but its leaf index, spliced in by the sink), so
an event that cannot be encoded fails its own caller there and then, never the shared batch.

    event loop thread                    writer thread
    ─────────────────                    ─────────────
    append(e) ──▶ pending[] ──notify──▶  take all pending
       await future                      INSERT … ; COMMIT (fsync)
       ◀──────── call_soon_threadsafe ── settle the appends' futures of the batch
                                         hand on: witness, listeners, exporters
       ◀──────── call_soon_threadsafe ── settle the integrate futures (if any)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from garrison.audit.checkpoint import CHECKPOINT_INTERVAL_S
from garrison.audit.events import AuditEvent, EventName
from garrison.audit.payloads_host import AuditRecovered
from garrison.errors import AuditUnavailable
from garrison.histograms import Histogram

log = logging.getLogger("garrison.audit")

# Events waiting for the writer. Past this the process is not keeping up (the disk is gone
# or far too slow); refusing new calls beats growing memory without bound.
AUDIT_QUEUE_MAX = 50_000
# Most events in one transaction: bounds the time one commit holds the write lock.
AUDIT_BATCH_MAX = 2_000
# Longest a call waits for its event to be durable before it is refused with 503.
AUDIT_APPEND_TIMEOUT_S = 2.0
# How often the watchdog looks for appends past their timeout (the timeout's resolution).
AUDIT_WATCHDOG_S = 0.1
# Other unawaited events (refusals, sign-in failures, recoveries) wake the writer and are
# committed within this delay, so concurrent ones share one fsync. Nothing recovers such an
# event after a crash, so the window it can be lost in stays this short.
AUDIT_LAZY_FLUSH_S = 0.005
# The outcome of an allowed call (``request.completed``) rides along with the next urgent
# event's commit, or is committed this long after it was queued; the writer is not woken
# for it. At concurrency 1 an outcome then costs neither a thread switch nor an fsync of its
# own (it shares the next call's). One lost at a crash is not lost for good: the allowed
# record is durable first, and the next start records the call as ``process_ended``.
AUDIT_RIDE_ALONG_S = 0.05
# The events that ride along (see AUDIT_RIDE_ALONG_S).
RIDES_ALONG = frozenset({EventName.REQUEST_COMPLETED})
# Pause after a failed write before retrying queued events, so a broken disk is not hammered.
AUDIT_RETRY_BACKOFF_S = 0.2
# While the log is known to be down, calls are refused at once (no 2 s wait each) and the
# writer probes for recovery this often in the background.
AUDIT_PROBE_S = 0.2
# How often an idle writer looks for directory changes waiting in the audit outbox (written
# by another process or thread): the longest a change waits for its leaf index, export and
# detection, at one cheap read per tick. Same as the snapshot poll (the change's enforcement).
AUDIT_OUTBOX_POLL_S = 0.05


class AuditSink(Protocol):
    """Where batches go. ``write_batch`` returns only when the rows are durable, else raises.
    A sink may also have ``commit_batch`` (``TreeSink``): the commit alone, returning what
    hands the records on, so the writer acknowledges the appends in between."""

    def open(self) -> None: ...

    def write_batch(self, events: Sequence[AuditEvent]) -> None: ...

    @property
    def checkpoint_due(self) -> bool:
        """Events were written since the last signed checkpoint."""
        ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


def _outbox_waiting(sink: AuditSink) -> bool:
    """Does ``sink`` have outbox rows to integrate? (A sink without an outbox: never.)"""
    waiting = getattr(sink, "outbox_waiting", None)
    return bool(waiting()) if waiting is not None else False


@dataclass(slots=True)
class _Item:
    event: AuditEvent | None  # None: integrate the outbox (``integrate``)
    future: asyncio.Future[None] | None


class AuditLog:
    def __init__(
        self,
        sink: AuditSink,
        *,
        queue_max: int = AUDIT_QUEUE_MAX,
        append_timeout: float = AUDIT_APPEND_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._queue_max = queue_max
        self._append_timeout = append_timeout
        self._clock = clock
        # Append deadlines and the lazy flush (injected: a test decides when time passes).
        self._monotonic = monotonic
        self._cv = threading.Condition()
        self._pending: list[_Item] = []
        self._urgent = 0
        self._oldest = 0.0
        # When the oldest queued event that wakes the writer (not riding along) was queued.
        self._soon_since: float | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[asyncio.Future[None], float] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self.healthy = True
        # Seconds per group commit (write and fsync of one batch), for /metrics.
        self.commit_latency = Histogram()
        self.written = 0
        self.failures = 0
        self._unhealthy_since: float | None = None
        # When the writer last committed (the idle checkpoint waits a quiet interval).
        self._last_commit = time.monotonic()

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._sink.open()
        self._thread = threading.Thread(target=self._run, name="garrison-audit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush everything queued, then stop the writer (blocking)."""
        if self._watchdog is not None and self._loop is not None:
            # close() may run in a worker thread: cancel the task on its own loop.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._watchdog.cancel)
            self._watchdog = None
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sink.close()

    @property
    def depth(self) -> int:
        return len(self._pending)

    # ── producers (event loop thread) ──────────────────────────────────────────────────────
    async def append(self, event: AuditEvent) -> None:
        """Return once ``event`` is durable; raise ``AuditUnavailable`` if it cannot be, or
        ``AuditRecordInvalid`` (at once) if the event itself cannot be encoded."""
        await self._durable(event)

    async def integrate(self) -> None:
        """Return once every outbox row waiting now is integrated (in the tree, exported,
        seen by detection); ``AuditUnavailable`` if that cannot happen now (the rows stay
        in the outbox and are integrated when the log is back)."""
        await self._durable(None)

    async def _durable(self, event: AuditEvent | None) -> None:
        """Queue ``event`` (``None``: the outbox alone) urgently and wait for its commit."""
        loop = self._loop
        if loop is None:
            raise AuditUnavailable("audit log not started")
        if not self.healthy:
            # Known down: refuse now; the writer thread finds out when it is back.
            raise AuditUnavailable("audit log is down (recovery is probed in the background)")
        prepared = event.prepare() if event is not None else None
        future: asyncio.Future[None] = loop.create_future()
        self._put(_Item(prepared, future), urgent=True)
        # One watchdog times out every waiter (a timer per call costs more than the append).
        self._waiters[future] = self._monotonic() + self._append_timeout
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch(), name="garrison-audit-watchdog")
        try:
            await future
        finally:
            self._waiters.pop(future, None)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(AUDIT_WATCHDOG_S)
            now = self._monotonic()
            late = [f for f, deadline in self._waiters.items() if deadline <= now]
            for future in late:
                self._waiters.pop(future, None)
                if not future.done():
                    future.set_exception(
                        AuditUnavailable(f"audit append not durable within {self._append_timeout}s")
                    )

    def append_later(self, event: AuditEvent) -> None:
        """Queue ``event`` to be committed soon; ``AuditUnavailable`` if the queue is full,
        ``AuditRecordInvalid`` if the event cannot be encoded."""
        self._put(_Item(event.prepare(), None), urgent=False, soon=event.name not in RIDES_ALONG)

    def _put(self, item: _Item, *, urgent: bool, soon: bool = False) -> None:
        with self._cv:
            if self._closing:
                raise AuditUnavailable("audit log is closing")
            if len(self._pending) >= self._queue_max:
                raise AuditUnavailable(f"audit queue full ({self._queue_max} events)")
            if not self._pending:
                self._oldest = self._monotonic()
            self._pending.append(item)
            if urgent:
                self._urgent += 1
                self._cv.notify()
            elif soon:
                if self._soon_since is None:
                    self._soon_since = self._monotonic()
                    self._cv.notify()
            elif len(self._pending) >= AUDIT_BATCH_MAX:
                # A full batch of them (a flood of refusals): commit now, not at the flush.
                self._cv.notify()

    # ── writer thread ──────────────────────────────────────────────────────────────────────
    def _take(self) -> list[_Item] | None:
        """The next batch; ``[]`` when idle long enough that a checkpoint is due."""
        with self._cv:
            while True:
                if self._pending and (
                    self._urgent or self._closing or len(self._pending) >= AUDIT_BATCH_MAX
                ):
                    break
                if self._pending:
                    due = self._oldest + AUDIT_RIDE_ALONG_S
                    if self._soon_since is not None:
                        due = min(due, self._soon_since + AUDIT_LAZY_FLUSH_S)
                    remaining = due - self._monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                elif self._closing:
                    return None
                elif not self.healthy:
                    # Nothing to retry: wake up to probe the sink for recovery.
                    if not self._cv.wait(AUDIT_PROBE_S) and not self._pending:
                        return []
                elif not self._cv.wait(AUDIT_OUTBOX_POLL_S) and not self._pending:
                    # Idle: look for outbox rows, and checkpoint after a quiet interval.
                    return []
            batch = self._pending[:AUDIT_BATCH_MAX]
            rest = self._pending[AUDIT_BATCH_MAX:]
            self._pending = rest
            self._urgent = sum(1 for item in rest if item.future is not None)
            self._oldest = self._monotonic()
            # Whatever is left is at least a full batch: it is committed next in any case.
            self._soon_since = self._oldest if rest else None
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                if self.healthy:
                    self._idle()
                else:
                    self._probe()
                continue
            started = time.perf_counter()
            events = [item.event for item in batch if item.event is not None]
            try:
                hand_on = self._commit(events)
            except Exception as exc:  # any sink failure means "not durable"
                self._on_failure(batch, exc)
                continue
            # Durable: the appends' callers go on now; the records are handed on (listeners,
            # exporters, the witness) while they do, and ``integrate`` callers, who wait for
            # that too, after it. The next batch is taken only once this one is handed on.
            self._settle(batch, None, integrated=False)
            try:
                hand_on()
            except Exception as exc:  # the hand-on logs its own failures; never the commit's
                log.error("audit hand-on failed: %s: %s", type(exc).__name__, exc)
            self._settle(batch, None, integrated=True)
            self._last_commit = time.monotonic()
            self.commit_latency.observe(time.perf_counter() - started)
            self.written += len(events)
            if not self.healthy:
                self._on_recovery()

    def _commit(self, events: list[AuditEvent]) -> Callable[[], None]:
        """Commit ``events`` (durable when this returns, else it raises); returns what hands
        them on. A sink without the two steps does both here."""
        commit_batch = getattr(self._sink, "commit_batch", None)
        if commit_batch is not None:
            hand_on: Callable[[], None] = commit_batch(events)
            return hand_on
        self._sink.write_batch(events)
        return _nothing

    def _probe(self) -> None:
        """Is the log writable again? (A sink without a probe is simply tried again.)"""
        probe = getattr(self._sink, "probe", None)
        try:
            if probe is not None:
                probe()
        except Exception as exc:
            log.debug("audit probe: still down: %s", exc)
            return
        self._on_recovery()

    def _idle(self) -> None:
        """An idle tick: integrate waiting outbox rows; once the log has been quiet for
        ``CHECKPOINT_INTERVAL_S`` with events unsigned, checkpoint them."""
        try:
            if _outbox_waiting(self._sink):
                self._sink.write_batch([])
                self._last_commit = time.monotonic()
            elif (
                self._sink.checkpoint_due
                and time.monotonic() - self._last_commit >= CHECKPOINT_INTERVAL_S
            ):
                self._sink.checkpoint()
        except Exception as exc:  # the next batch or tick tries again
            log.error("audit outbox or checkpoint failed: %s: %s", type(exc).__name__, exc)
            time.sleep(AUDIT_RETRY_BACKOFF_S)

    def _on_failure(self, batch: list[_Item], exc: Exception) -> None:
        self.failures += 1
        if self.healthy:
            log.error("audit log write failed: %s: %s — refusing calls", type(exc).__name__, exc)
            self._unhealthy_since = self._clock()
        self.healthy = False
        # Waiters are told now (their calls are refused); unawaited events are kept and retried.
        self._settle([item for item in batch if item.future is not None], exc)
        keep = [item for item in batch if item.future is None]
        with self._cv:
            self._pending = keep + self._pending
            if keep and self._soon_since is None:
                self._soon_since = self._monotonic()  # retried as soon as the sink allows
            if len(self._pending) > self._queue_max:
                dropped = len(self._pending) - self._queue_max
                log.error("audit queue overflow while failing: %d queued events lost", dropped)
                self._pending = self._pending[: self._queue_max]
            if self._closing:
                # Shutting down with a broken sink: report and stop rather than spin.
                log.error("audit log closing with %d unwritten events", len(self._pending))
                self._pending = []
                return
        time.sleep(AUDIT_RETRY_BACKOFF_S)

    def _on_recovery(self) -> None:
        self.healthy = True
        since = self._unhealthy_since
        self._unhealthy_since = None
        log.warning("audit log writable again")
        with contextlib.suppress(AuditUnavailable):
            recovered = AuditRecovered(unavailable_since=since, failed_batches=self.failures)
            self.append_later(
                AuditEvent(
                    recovered.NAME,
                    at=self._clock(),
                    actor="garrison",
                    data=recovered.as_data(),
                    payload=recovered,
                )
            )

    def _settle(
        self, batch: list[_Item], exc: Exception | None, *, integrated: bool | None = None
    ) -> None:
        """Resolve the batch's waiters in one loop callback (``integrated``: only the
        ``integrate`` ones (True) or only the appends (False); None: all)."""
        futures = [
            item.future
            for item in batch
            if item.future is not None
            and (integrated is None or (item.event is None) == integrated)
        ]
        if not futures or self._loop is None:
            return
        error = None if exc is None else AuditUnavailable(f"{type(exc).__name__}: {exc}")
        # RuntimeError: the loop closed during shutdown, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, futures, error)


def _nothing() -> None:
    """The hand-on of a sink that hands on inside ``write_batch``."""


def _resolve(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
