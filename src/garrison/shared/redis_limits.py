"""Admission limits that hold over every replica: calls in flight per credential and per
principal, calls per minute per principal, and the call's DPoP replay entry — one script,
one round trip to Redis per call (``scripts.ADMIT``).

A call's slots are leases: members of a sorted set scored by their expiry. A replica renews
the leases of its running calls every ``LEASE_RENEW_S``; a replica killed with calls in
flight stops renewing, and its slots fall out within ``LEASE_TTL_S`` (each admission drops
expired members before counting). A call that ends gives its slots back without waiting:
the release is queued and rides with the next admission's script (no round trip of its
own under load); what no admission carried within ``RELEASE_DELAY_S`` a background task
sends in one batch. If Redis is down then, the release is retried; at worst the lease
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from typing import Any

import redis.asyncio

from garrison.shared import scripts
from garrison.shared.redis_link import REDIS_ERRORS, REDIS_RETRY_S, RedisLink
from garrison.shared.verdicts import ProofEntry, SharedAnswer, SharedVerdict

log = logging.getLogger("garrison.shared")

# A lease not renewed for this long is taken for the slot of a dead replica and freed: long
# enough that three missed renewals (a loaded loop, a Redis failover) do not free the slot of
# a call still running, short enough that a killed replica's slots come back within a minute.
LEASE_TTL_S = 30.0
# How often a replica renews the leases of its running calls (a third of the TTL).
LEASE_RENEW_S = 10.0
# Leases released or renewed per script run: keeps one run under ~1 ms in Redis, which
# serves nobody else while a script runs.
LEASE_BATCH_MAX = 512
# How long a queued release waits for an admission to carry it before it is sent alone: a
# slot is held this much longer at most, and a busy replica sends no release of its own.
RELEASE_DELAY_S = 0.02
# Releases carried by one admission (each is one ZREM in its script).
RELEASES_PER_ADMISSION = 64
# Stopping: how long the background tasks get to end (one Redis timeout and some).
CLOSE_WAIT_S = 1.0
# Releases kept for a retry while Redis is down: past this many the oldest are dropped
# (their leases expire by themselves within LEASE_TTL_S).
RELEASE_BACKLOG_MAX = 100_000


class _Lease:
    __slots__ = ("_id", "_keys", "_owner", "released")

    def __init__(self, owner: RedisLimits, lease_id: str, keys: tuple[str, str]) -> None:
        self._owner = owner
        self._id = lease_id
        self._keys = keys
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._owner._release(self._id, self._keys)


class RedisLimits:
    """The data plane's shared admission (``garrison.shared.verdicts.SharedLimits``)."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        client: redis.asyncio.Redis | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
        renew_s: float = LEASE_RENEW_S,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.client = client if client is not None else link.async_client()
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.renew_s = renew_s
        self._admit = self.client.register_script(scripts.ADMIT)
        self._release_script = self.client.register_script(scripts.RELEASE)
        self._renew_script = self.client.register_script(scripts.RENEW)
        self._first_use = self.client.register_script(scripts.FIRST_USE)
        # This replica's name in lease ids (unique per process start).
        self._replica = secrets.token_hex(6)
        self._ids = itertools.count()
        self._live: dict[str, tuple[str, str]] = {}  # lease id → its two keys
        self._released: list[tuple[str, str]] = []  # (key, lease id) to remove
        self._sending = 0  # release batches on their way to Redis (``flush`` waits for them)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def up(self) -> bool:
        return self.link.up

    async def enter(
        self,
        credential_id: str,
        principal_id: str,
        *,
        per_credential: int,
        per_principal: int,
        per_minute: int,
        proof: ProofEntry | None = None,
    ) -> SharedAnswer:
        if not self.link.usable():
            return SharedAnswer(SharedVerdict.UNAVAILABLE)
        keys = scripts.lease_keys(self.prefix, credential_id, principal_id)
        lease_id = f"{self._replica}:{next(self._ids)}"
        if proof is not None:
            entry, owned = scripts.seen_keys(self.prefix, "jti", proof.key, proof.owner)
            proof_args: list[Any] = [
                max(1, int(proof.ttl_s * 1000)),
                proof.owner_cap if proof.owner is not None else 0,
                proof.key,
            ]
        else:
            entry, owned = keys  # unused by the script
            proof_args = [0, 0, ""]
        carried = self._released[:RELEASES_PER_ADMISSION]
        del self._released[: len(carried)]
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            code, retry_ms = await self._admit(
                keys=[
                    *keys,
                    scripts.rate_key(self.prefix, principal_id),
                    entry,
                    owned,
                    *(k for k, _ in carried),
                ],
                args=[
                    lease_id,
                    self.lease_ttl_ms,
                    per_credential,
                    per_principal,
                    per_minute,
                    *proof_args,
                    *(m for _, m in carried),
                ],
            )
        except asyncio.CancelledError:
            # Cut (a lock, a client gone) while the script ran or before: the releases it
            # carried may not have been given back, and the slots it took may be taken.
            self._abandon(lease_id, keys, carried)
            raise
        except REDIS_ERRORS as exc:
            self._released[:0] = carried  # not given back: retried
            self.link.failed(exc)
            return SharedAnswer(SharedVerdict.UNAVAILABLE)
        if task is not None and task.cancelling() > cancels:
            # Cancelled inside redis-py, which swallowed it and answered: the cut must still
            # reach the call (a lock cutting it must stop it), and the slots go back.
            self._abandon(lease_id, keys, ())
            raise asyncio.CancelledError
        self.link.succeeded()
        verdict = SharedVerdict(int(code))
        if verdict is not SharedVerdict.ADMITTED:
            return SharedAnswer(verdict, retry_after_s=int(retry_ms) / 1000)
        self._live[lease_id] = keys
        return SharedAnswer(verdict, _Lease(self, lease_id, keys))

    async def record_proof(self, proof: ProofEntry) -> SharedVerdict:
        if not self.link.usable():
            return SharedVerdict.UNAVAILABLE
        entry, owned = scripts.seen_keys(self.prefix, "jti", proof.key, proof.owner)
        cap = proof.owner_cap if proof.owner is not None else 0
        try:
            code = await self._first_use(
                keys=[entry, owned], args=[max(1, int(proof.ttl_s * 1000)), cap, proof.key]
            )
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
            return SharedVerdict.UNAVAILABLE
        self.link.succeeded()
        return SharedVerdict(int(code))  # 0 new, 1 seen, 2 full: the same numbers

    # ── giving back and keeping ────────────────────────────────────────────────────────────
    def _abandon(
        self, lease_id: str, keys: tuple[str, str], carried: list[tuple[str, str]] | tuple[()]
    ) -> None:
        """An admission cut short: give back what it may have taken, and retry the releases
        it carried (removing a lease twice, or one never added, changes nothing)."""
        self._released[:0] = carried
        self._release(lease_id, keys)

    def _release(self, lease_id: str, keys: tuple[str, str]) -> None:
        self._live.pop(lease_id, None)
        self._released.extend((key, lease_id) for key in keys)
        if len(self._released) > RELEASE_BACKLOG_MAX:
            del self._released[: len(self._released) - RELEASE_BACKLOG_MAX]
        self._wake.set()

    async def _send_releases(self) -> None:
        while not self._closing:
            await self._wake.wait()
            await asyncio.sleep(RELEASE_DELAY_S)  # admissions may carry them meanwhile
            self._wake.clear()
            while self._released and not self._closing:
                if not self.link.usable():
                    await asyncio.sleep(REDIS_RETRY_S)
                    continue
                # Taken off the queue before the await: admissions take from it meanwhile.
                batch = self._released[:LEASE_BATCH_MAX]
                del self._released[: len(batch)]
                self._sending += 1
                try:
                    await self._release_script(
                        keys=[k for k, _ in batch], args=[m for _, m in batch]
                    )
                except REDIS_ERRORS as exc:
                    self._released[:0] = batch
                    self.link.failed(exc)
                    continue
                finally:
                    self._sending -= 1
                self.link.succeeded()

    async def renew(self) -> int:
        """Renew every running call's leases now; returns how many were sent."""
        pairs = [(key, lease) for lease, keys in list(self._live.items()) for key in keys]
        sent = 0
        for start in range(0, len(pairs), LEASE_BATCH_MAX):
            batch = pairs[start : start + LEASE_BATCH_MAX]
            try:
                await self._renew_script(
                    keys=[k for k, _ in batch], args=[self.lease_ttl_ms, *(m for _, m in batch)]
                )
            except REDIS_ERRORS as exc:
                self.link.failed(exc)
                return sent
            self.link.succeeded()
            sent += len(batch)
        return sent

    async def _keep(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.renew_s)
            if self._live and self.link.usable():
                await self.renew()

    @property
    def in_flight(self) -> int:
        return len(self._live)

    @property
    def pending_releases(self) -> int:
        return len(self._released)

    async def flush(self) -> None:
        """Wait until queued releases are sent, the batch on its way included (tests, and
        stopping)."""
        for _ in range(100):
            if not (self._released or self._sending) or not self.link.up:
                return
            self._wake.set()
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._send_releases(), name="garrison-shared-release"),
            asyncio.create_task(self._keep(), name="garrison-shared-renew"),
        ]

    async def close(self) -> None:
        await self.flush()
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a cancellation that lands as a command times out can reach the task
            # as a timeout error instead (then the flag above ends its loop).
            await asyncio.wait(self._tasks, timeout=CLOSE_WAIT_S)
        self._tasks = []
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.aclose()
