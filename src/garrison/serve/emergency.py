"""Locks placed through the emergency journal while the database cannot be written: enforced
in this process at once, overlaid on every snapshot loaded, and folded into the database
and the audit log when they are back."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import sqlalchemy as sa

from garrison.audit.writer import AuditLog
from garrison.domain.locks import Lock, LockKind
from garrison.domain.networks import parse_network
from garrison.errors import AuditUnavailable
from garrison.gateway.containment import cut_covered
from garrison.gateway.state import GatewayState
from garrison.keyring import Sealer
from garrison.serve.snapshots import integrated
from garrison.store.directory import Directory
from garrison.store.emergency_locks import EmergencyJournal, JournalFull
from garrison.store.locks import adopt_emergency_lock

log = logging.getLogger("garrison.gateway")


class EmergencyLocks:
    """The journalled locks this process enforces that are not yet in the database."""

    def __init__(
        self,
        state: GatewayState,
        journal: EmergencyJournal,
        *,
        engine: sa.Engine,
        pepper: bytes,
        sealer: Sealer,
        audit: AuditLog,
        clock: Callable[[], float],
        reload: Callable[[], Awaitable[None]],
    ) -> None:
        self.state = state
        self.journal = journal
        self.engine = engine
        self.pepper = pepper
        self.sealer = sealer
        self.audit = audit
        self.clock = clock
        # Loads the newest snapshot (which carries this overlay).
        self.reload = reload
        # By id.
        self._locks: dict[str, Lock] = {}

    def overlay(self) -> Iterable[Lock]:
        """What every loaded snapshot carries besides its stored locks."""
        return self._locks.values()

    async def place(self, record: dict[str, Any]) -> None:
        """Journal a lock durably and enforce it in this process at once (the database
        cannot be written); it reaches the database and the log when they are back."""
        try:
            await asyncio.to_thread(self.journal.place, record)
        except (JournalFull, OSError, ValueError) as exc:
            raise AuditUnavailable(f"emergency lock journal: {exc}") from None
        lock = emergency_lock(record)
        self._enforce([lock])
        log.error(
            "EMERGENCY LOCK %s placed (%s %s): enforced now", lock.id, lock.kind.value, lock.target
        )

    def _enforce(self, locks: list[Lock]) -> None:
        for lock in locks:
            self._locks[lock.id] = lock
        snapshot = self.state.snapshot
        # Swap and cut with no await between (see gateway.containment).
        self.state.snapshot = dataclasses.replace(snapshot, locks=snapshot.locks.merged(locks))
        cut_covered(self.state)

    async def fold(self) -> int:
        """Write journalled locks into the database and the log; returns how many were
        folded (0 while the database still cannot be written).

        The journal is shared by every process on the data directory: a lock another process
        journalled is enforced here too from the first tick that sees it (the database that
        would carry it is down), and dropped from this process's overlay once it is no longer
        pending (folded by someone, so in the database)."""
        known = set(self._locks)
        pending = await asyncio.to_thread(self.journal.pending)
        pending_ids = {record.get("id") for _, record in pending}
        unseen = [
            emergency_lock(record) for _, record in pending if record.get("id") not in self._locks
        ]
        if unseen:
            self._enforce(unseen)
            log.error(
                "%d emergency lock(s) journalled by another process: enforced now", len(unseen)
            )
        done = {lock_id for lock_id in known if lock_id not in pending_ids}
        folded = 0
        for slot, record in pending:
            directory = Directory(
                self.engine,
                actor=str(record.get("created_by", "garrison")),
                pepper=self.pepper,
                sealer=self.sealer,
            )
            await asyncio.to_thread(adopt_emergency_lock, directory, record, now=self.clock())
            await asyncio.to_thread(self.journal.clear, slot)
            done.add(str(record["id"]))
            folded += 1
        if done:
            await integrated(self.audit)
            await self.reload()  # the stored locks are in the snapshot now: drop the overlay
            for lock_id in done:
                # Only what is stored: a lock placed since ``pending`` was read stays.
                self._locks.pop(lock_id, None)
            await self.reload()
        if folded:
            log.warning("%d emergency lock(s) recorded in the database and the audit log", folded)
        return folded


def emergency_lock(record: dict[str, Any]) -> Lock:
    """The lock a journal record holds, as the data plane enforces it."""
    kind = LockKind(record["kind"])
    return Lock(
        id=record["id"],
        kind=kind,
        target=record["target"],
        reason=record["reason"],
        created_by=record["created_by"],
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        network=parse_network(record["target"]) if kind is LockKind.NETWORK else None,
    )
