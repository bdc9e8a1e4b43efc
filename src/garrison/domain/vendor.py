"""A vendor: the terms under which a third party's people may use restricted models.

Pure: a frozen record of the terms, the lifecycle as a transition table, and the checks the
directory and the data plane both apply (the clock is passed in).

    onboarding ──▶ active ◀──▶ suspended
        │            │  │          │
        │            ▼  └────┐     ▼
        │         expired ◀──┼── (contract end, from active or suspended)
        ▼            ▼       ▼
                 offboarded  (from anywhere but offboarded)
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from garrison.domain.levels import Level
from garrison.domain.types import Network
from garrison.errors import BadRequest


class VendorStatus(enum.StrEnum):
    ONBOARDING = "onboarding"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    OFFBOARDED = "offboarded"


TRANSITIONS: dict[VendorStatus, frozenset[VendorStatus]] = {
    VendorStatus.ONBOARDING: frozenset({VendorStatus.ACTIVE, VendorStatus.OFFBOARDED}),
    VendorStatus.ACTIVE: frozenset(
        {VendorStatus.SUSPENDED, VendorStatus.EXPIRED, VendorStatus.OFFBOARDED}
    ),
    VendorStatus.SUSPENDED: frozenset(
        {VendorStatus.ACTIVE, VendorStatus.EXPIRED, VendorStatus.OFFBOARDED}
    ),
    # Back to active only when the contract had not really ended (a wall clock that jumped,
    # or a contract extended after it lapsed): a two-person change (see the admin API).
    VendorStatus.EXPIRED: frozenset({VendorStatus.ACTIVE, VendorStatus.OFFBOARDED}),
    VendorStatus.OFFBOARDED: frozenset(),
}


class IllegalTransition(BadRequest):
    code = "illegal_transition"


def check_transition(current: VendorStatus, target: VendorStatus) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
        raise IllegalTransition(
            f"a vendor cannot go from {current.value} to {target.value} (allowed: {allowed})"
        )


@dataclass(frozen=True, slots=True)
class VendorTerms:
    sponsor_id: str
    contract_start: float
    contract_end: float
    networks: tuple[Network, ...]
    seat_limit: int
    ceiling_level: Level
    ceiling_compartments: frozenset[str]
    status: VendorStatus
    security_review_at: float | None = None
    agreement_ref: str = ""

    @property
    def active(self) -> bool:
        return self.status is VendorStatus.ACTIVE

    def in_contract(self, now: float) -> bool:
        return self.contract_start <= now < self.contract_end

    def usable(self, now: float) -> bool:
        """Its people may use the data plane now (status and contract window)."""
        return self.active and self.in_contract(now)

    def allows_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.networks)

    def covers_network(self, net: Network) -> bool:
        return any(
            net.version == outer.version and net.subnet_of(outer)  # type: ignore[arg-type]
            for outer in self.networks
        )

    def ceiling_allows(self, level: Level, compartments: frozenset[str]) -> bool:
        return level <= self.ceiling_level and compartments <= self.ceiling_compartments
