"""Locks: kill switches that refuse every call they cover, at once. Pure: no I/O.

A lock covers a call when its target is the call's credential, principal, org (a vendor or
the internal org), model, a network holding the call's source address, or everything. A
lock with an expiry stops covering at that instant; a lifted lock is not loaded at all.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from garrison.domain.types import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class LockKind(enum.StrEnum):
    CREDENTIAL = "credential"
    PRINCIPAL = "principal"
    VENDOR = "vendor"  # any org: a vendor, or the internal org
    MODEL = "model"
    NETWORK = "network"
    ALL = "all"  # global lockdown


@dataclass(frozen=True, slots=True)
class Lock:
    id: str
    kind: LockKind
    # The credential, principal, org or model id; a CIDR for NETWORK; "*" for ALL.
    target: str
    reason: str
    created_by: str
    created_at: float
    expires_at: float | None = None
    incident_id: str | None = None
    network: Network | None = field(default=None, compare=False)

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def _first_active(locks: tuple[Lock, ...] | None, now: float) -> Lock | None:
    if locks:
        for lock in locks:
            if lock.active(now):
                return lock
    return None


@dataclass(frozen=True, slots=True)
class LockSet:
    """The unlifted locks of one snapshot, indexed for the hot path (a few dict lookups)."""

    by_target: Mapping[tuple[LockKind, str], tuple[Lock, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    networks: tuple[Lock, ...] = ()
    everything: tuple[Lock, ...] = ()

    # What a lock on a principal covers besides them (see ``build``), kept so that locks
    # added later (``merged``) cover the same.
    covers: Mapping[str, tuple[tuple[LockKind, str], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def build(
        cls,
        locks: Iterable[Lock],
        covers: Mapping[str, Iterable[tuple[LockKind, str]]] | None = None,
    ) -> LockSet:
        """``covers``: what a lock on a principal covers besides them (the service
        accounts they own, the keys they issued), by principal id."""
        kept = MappingProxyType({k: tuple(v) for k, v in (covers or {}).items()})
        by_target: dict[tuple[LockKind, str], list[Lock]] = {}
        networks: list[Lock] = []
        everything: list[Lock] = []
        for lock in locks:
            if lock.kind is LockKind.ALL:
                everything.append(lock)
            elif lock.kind is LockKind.NETWORK:
                networks.append(lock)
            else:
                by_target.setdefault((lock.kind, lock.target), []).append(lock)
                if lock.kind is LockKind.PRINCIPAL:
                    for covered in kept.get(lock.target, ()):
                        by_target.setdefault(covered, []).append(lock)
        return cls(
            MappingProxyType({k: tuple(v) for k, v in by_target.items()}),
            tuple(networks),
            tuple(everything),
            kept,
        )

    def __iter__(self) -> Iterator[Lock]:
        """Every lock once (a principal's lock is indexed under what it covers too)."""
        seen: set[str] = set()
        for locks in (*self.by_target.values(), self.networks, self.everything):
            for lock in locks:
                if lock.id not in seen:
                    seen.add(lock.id)
                    yield lock

    def merged(self, extra: Iterable[Lock]) -> LockSet:
        """These locks and ``extra`` (those whose id is not here already), covering alike."""
        have = {lock.id for lock in self}
        more = [lock for lock in extra if lock.id not in have]
        return LockSet.build([*self, *more], self.covers) if more else self

    def __bool__(self) -> bool:
        return bool(self.by_target or self.networks or self.everything)

    def __len__(self) -> int:
        return (
            sum(len(v) for v in self.by_target.values()) + len(self.networks) + len(self.everything)
        )

    def covering(
        self,
        now: float,
        *,
        credential_id: str | None = None,
        principal_id: str | None = None,
        org_id: str | None = None,
        model_id: str | None = None,
        address: Address | None = None,
        include_global: bool = True,
    ) -> Lock | None:
        """The first active lock covering a call with these attributes, or None."""
        if not (self.by_target or self.networks or self.everything):
            return None
        if include_global:
            found = _first_active(self.everything, now)
            if found is not None:
                return found
        for kind, target in (
            (LockKind.CREDENTIAL, credential_id),
            (LockKind.PRINCIPAL, principal_id),
            (LockKind.VENDOR, org_id),
            (LockKind.MODEL, model_id),
        ):
            if target is not None:
                found = _first_active(self.by_target.get((kind, target)), now)
                if found is not None:
                    return found
        if address is not None:
            for lock in self.networks:
                if lock.network is not None and address in lock.network and lock.active(now):
                    return lock
        return None


EMPTY_LOCKS = LockSet()
