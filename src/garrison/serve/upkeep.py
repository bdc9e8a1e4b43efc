"""A process's upkeep on a slow tick: free disk space, memory after an audit outage, folding
emergency locks, renewing its instance lease, and giving the unfinished calls of processes
that died the outcome ``process_ended``."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from garrison.audit.writer import AuditLog
from garrison.detect.observation import Finding, Severity
from garrison.gateway.memory_release import AfterOutage
from garrison.gateway.outcome import ended_elsewhere
from garrison.gateway.state import GatewayState
from garrison.respond.monitor import Monitor
from garrison.serve.emergency import EmergencyLocks
from garrison.store import instances

log = logging.getLogger("garrison.gateway")

# A process that has not renewed its lease for this long is taken for dead and its unfinished
# calls get the outcome `process_ended`: several missed renewals, so a stalled disk or a busy
# moment never marks a live process's calls.
INSTANCE_LEASE_S = 15.0
# How often a process renews its lease (and looks for lapsed ones); free space (one statvfs)
# is read on the same tick.
INSTANCE_RENEW_S = 2.0
# Free space the data directory's file system must keep: on SQLite the database lives there
# (the WAL grows during an audit outage and checkpoints need room); on PostgreSQL the
# database's disk is the server's to watch, and this one holds the emergency lock journal,
# which must be writable exactly when the database is not. Below this /readyz says not ready
# and an alert is raised, before a full disk stops the log (and with it every call).
MIN_FREE_BYTES = 256 * 1024 * 1024


class Upkeep:
    def __init__(
        self,
        state: GatewayState,
        *,
        engine: sa.Engine,
        audit: AuditLog,
        emergency: EmergencyLocks,
        monitor: Monitor | None,
        instance_id: str,
        # This process's data directory (``serve.wiring.data_dir``): SQLite's, or on PostgreSQL
        # the one holding the key files and the emergency lock journal.
        data_dir: Path,
        clock: Callable[[], float],
    ) -> None:
        self.state = state
        self.engine = engine
        self.audit = audit
        self.emergency = emergency
        self.monitor = monitor
        self.instance_id = instance_id
        self.data_dir = data_dir
        self.clock = clock
        # Gives the memory an audit outage's backlog took back once it is written.
        self.after_outage = AfterOutage()

    def register(self) -> None:
        """Take this process's lease (in a worker thread, at start)."""
        instances.register(
            self.engine,
            self.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            now=self.clock(),
            lease_s=INSTANCE_LEASE_S,
        )

    def end(self) -> None:
        """Record this process's clean stop: no other process needs to end its calls."""
        instances.end(self.engine, self.instance_id, now=self.clock())

    async def keep_lease(self) -> None:
        """Renew this instance's lease; give the calls of instances that died an outcome."""
        while True:
            await self.check_disk()
            if self.after_outage.tick(self.audit.healthy, self.audit.depth):
                await asyncio.sleep(0)  # released (gc + malloc_trim, a few ms): yield once
            try:
                await self.emergency.fold()
            except Exception as exc:  # still cannot write: the next tick tries again
                log.error("emergency locks not yet recorded: %s", exc)
            try:
                await asyncio.to_thread(
                    instances.renew,
                    self.engine,
                    self.instance_id,
                    now=self.clock(),
                    lease_s=INSTANCE_LEASE_S,
                )
                await self.end_lapsed_instances()
            except Exception as exc:  # the next tick tries again
                log.error("instance lease upkeep failed: %s", exc)
            await asyncio.sleep(INSTANCE_RENEW_S)

    async def check_disk(self) -> None:
        """Read the free space of the data directory's file system; say so when it runs low."""
        try:
            free = (await asyncio.to_thread(shutil.disk_usage, self.data_dir)).free
        except OSError as exc:
            log.error("cannot read free disk space: %s", exc)
            return
        self.state.disk_free_bytes = free
        low = free < MIN_FREE_BYTES
        if low and not self.state.disk_low:
            log.error(
                "DISK LOW: %d MiB free in the data directory (minimum %d MiB): /readyz "
                "says not ready; free space before the audit log stops",
                free // 2**20,
                MIN_FREE_BYTES // 2**20,
            )
            if self.monitor is not None:
                finding = Finding(
                    rule_id="disk-low",
                    title="Free disk space under the minimum",
                    severity=Severity.HIGH,
                    subject_kind="gateway",
                    subject_id="disk",
                    reason="disk.low",
                    at=self.clock(),
                    data={"free_bytes": free, "minimum_bytes": MIN_FREE_BYTES},
                )
                await asyncio.to_thread(self.monitor.raise_finding, finding)
        elif not low and self.state.disk_low:
            log.warning("disk space back above the minimum (%d MiB free)", free // 2**20)
        self.state.disk_low = low

    async def end_lapsed_instances(self, now: float | None = None) -> int:
        """Record ``process_ended`` for every call that a process whose lease lapsed (as of
        ``now``, default the clock) allowed and never finished; returns how many calls."""
        claimed = await asyncio.to_thread(
            instances.claim_lapsed,
            self.engine,
            self.instance_id,
            now=self.clock() if now is None else now,
        )
        ended = 0
        for dead in claimed:
            while True:
                calls = await asyncio.to_thread(instances.unfinished, self.engine, dead)
                for call in calls:
                    await self.audit.append(
                        ended_elsewhere(
                            call, instance=dead, recorded_by=self.instance_id, at=self.clock()
                        )
                    )
                ended += len(calls)
                if len(calls) < instances.UNFINISHED_BATCH:
                    break
            log.warning("instance %s ended without stopping: %d call(s) marked", dead, ended)
        return ended
