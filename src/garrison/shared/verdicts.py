"""What a shared admission answers, and the interface the data plane calls it through (the
Redis implementation is ``garrison.shared.redis_limits``; this module imports no Redis)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class SharedVerdict(enum.Enum):
    ADMITTED = 0
    REPLAYED = 1  # the proof's jti was seen (by any replica)
    REPLAY_FULL = 2  # its owner's share of the replay cache is full (fail closed)
    CREDENTIAL_CONCURRENCY = 3
    PRINCIPAL_CONCURRENCY = 4
    RATE_LIMITED = 5
    UNAVAILABLE = 6  # Redis cannot be asked (down, slow, refusing): the caller decides


@dataclass(frozen=True, slots=True)
class SharedAnswer:
    verdict: SharedVerdict
    # What to give back when the call ends (ADMITTED only).
    lease: SharedLease | None = None
    # RATE_LIMITED: seconds until one more call fits.
    retry_after_s: float = 0.0


class SharedLease(Protocol):
    def release(self) -> None:
        """Give the call's slots back (exactly once; never raises, never waits)."""
        ...


@dataclass(frozen=True, slots=True)
class ProofEntry:
    """The DPoP replay entry a call's admission records in the shared cache."""

    key: str
    ttl_s: float
    owner: str | None
    owner_cap: int  # entries one owner may hold at once (its share of the cache)


class SharedLimits(Protocol):
    """Per-credential and per-principal calls in flight and per-principal calls per minute,
    over every replica, plus the call's DPoP replay entry: one round trip."""

    @property
    def up(self) -> bool:
        """Whether the last exchange with the shared store worked."""
        ...

    async def enter(
        self,
        credential_id: str,
        principal_id: str,
        *,
        per_credential: int,
        per_principal: int,
        per_minute: int,
        proof: ProofEntry | None = None,
    ) -> SharedAnswer: ...

    async def record_proof(self, proof: ProofEntry) -> SharedVerdict:
        """Only the proof's replay entry (calls that take no slot: the models list):
        ADMITTED, REPLAYED, REPLAY_FULL or UNAVAILABLE."""
        ...
