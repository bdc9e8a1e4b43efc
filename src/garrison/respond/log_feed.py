"""The detection worker's feed: the shared audit log in ``seq`` order from a cursor.

Its own process's committed batches arrive from the audit writer (``offer``: a
``put_nowait`` on a bounded queue, never waiting) and spare a read of rows this process
already holds; whatever does not start at the cursor — other processes' rows, batches the
queue had no room for — is read from the log. Items are ``(seq, observation)``; an
observation is ``None`` for a row detection cannot read (the cursor still moves past it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import AuditEvent
from garrison.detect.observation import Obs
from garrison.store import detector_state

log = logging.getLogger("garrison.detect")

# Batches waiting for the detection thread (a batch is one audit commit, up to 512 events):
# ~100,000 events of slack before the worker reads the rest from the log instead.
DETECT_QUEUE_BATCHES = 200
# Rows read from the log per query, and the most events judged in one committed range.
CATCHUP_BATCH = 5000
# A missing row in the log (a seq not yet committed by a concurrent writer) is waited for
# this long, then stepped over with an error logged (a row deleted from the log must not
# stop detection for good; `garrison audit verify` reports the deletion).
DETECT_GAP_WAIT_S = 10.0

Item = tuple[int, Obs | None]
STOP = object()


class LogFeed:
    def __init__(self, engine: sa.Engine, *, queue_batches: int | None = None) -> None:
        self._db = engine
        self._queue: queue.Queue[Any] = queue.Queue(queue_batches or DETECT_QUEUE_BATCHES)
        self.cursor = 0  # the last seq taken
        self.dropped = 0  # events the queue had no room for (read from the log instead)
        self.behind = False  # the last read of the log was a full one
        self._gap_since: float | None = None
        self._stopped = False  # a STOP was taken while draining: the next take returns None

    # ── the audit writer's side ───────────────────────────────────────────────────────────
    def offer(self, first_index: int, events: Sequence[AuditEvent]) -> None:
        try:
            self._queue.put_nowait((first_index, events))
        except queue.Full:  # not lost: the worker reads them from the log
            self.dropped += len(events)

    def wake(self) -> None:
        """Make a waiting ``take`` return ``None`` (if the queue is full it returns within
        its timeout anyway)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(STOP)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def idle(self) -> bool:
        return self._queue.empty() and not self.behind

    # ── the worker's side ─────────────────────────────────────────────────────────────────
    def restart(self, cursor: int) -> bool:
        """Continue from ``cursor`` (a claim or a rollback); queued batches are dropped (the
        log has them). Returns whether a ``STOP`` was among them."""
        self.cursor = cursor
        self._gap_since = None
        stop, self._stopped = self._stopped, False
        try:
            while True:
                stop = self._queue.get_nowait() is STOP or stop
        except queue.Empty:
            return stop

    def take(self, timeout: float) -> list[Item] | None:
        """The next items from the cursor on: a queued batch (after the log rows before it),
        else, after ``timeout`` with nothing queued, rows from the log; ``None`` after
        ``wake``."""
        if self._stopped:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return self.from_log(CATCHUP_BATCH)
        if item is STOP:
            return None
        items = self.from_batch(*item)
        # And every batch queued behind it (up to a catch-up's worth): one wake-up judges
        # all the commits since the last.
        while len(items) < CATCHUP_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is STOP:
                self._stopped = True  # the next take returns None
                break
            items += self.from_batch(*item)
        return items

    def queued(self) -> list[Item]:
        """Everything queued now, without waiting (at stop)."""
        items: list[Item] = []
        try:
            while True:
                item = self._queue.get_nowait()
                if item is not STOP:
                    items += self.from_batch(*item)
        except queue.Empty:
            return items

    def from_batch(self, first: int, events: Sequence[AuditEvent]) -> list[Item]:
        """A committed batch from the cursor on, after the log rows before it; when those are
        not all there yet, only they (the batch is read from the log later)."""
        items: list[Item] = []
        if first > self.cursor:
            items = self.from_log(min(CATCHUP_BATCH, first - self.cursor))
            if self.cursor != first:
                return items
        skip = self.cursor - first
        for k in range(max(0, skip), len(events)):
            items.append((first + k + 1, Obs.from_event(first + k, events[k])))
        if len(events) > skip:
            self.cursor = first + len(events)
        return items

    def from_log(self, limit: int) -> list[Item]:
        """Up to ``limit`` rows after the cursor, stopping at a row not yet there."""
        with self._db.connect() as conn:
            rows = detector_state.records_after(conn, self.cursor, limit)
        self.behind = len(rows) == limit
        items: list[Item] = []
        for seq, record in rows:
            if seq != self.cursor + 1:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < DETECT_GAP_WAIT_S:
                    break
                log.error(
                    "audit rows %d..%d missing: detection steps over them", self.cursor + 1, seq - 1
                )
            self._gap_since = None
            try:
                obs: Obs | None = Obs.from_record(orjson.loads(record))
            except Exception:  # judged as nothing; the cursor still moves past it
                log.exception("audit row %d unreadable for detection", seq)
                obs = None
            items.append((seq, obs))
            self.cursor = seq
        return items
