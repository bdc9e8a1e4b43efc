"""Just-in-time access: requests, their lifecycle, and the grants they produce. Pure.

    pending ──▶ approved      (enough approvals: a grant exists from that moment)
       ├──────▶ denied        (an approver said no)
       ├──────▶ cancelled     (the requester withdrew it)
       └──────▶ expired       (nobody decided within ACCESS_REQUEST_TTL_S)

Rules for approving a request for a critical model: nobody approves their own request; two
distinct approvers holding the approver role; at least one of them from the internal org;
for a vendor principal, the vendor's sponsor is one of them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from garrison.domain.levels import Level
from garrison.errors import BadRequest

# A pending request lapses after this: access asked for now is needed now.
ACCESS_REQUEST_TTL_S = 3600.0
# Longest grant per model level: time-boxed access that ends within a working day.
GRANT_MAX_DURATION_S: Mapping[Level, float] = {Level.CRITICAL: 8 * 3600.0}
# Approvals a critical request needs.
CRITICAL_APPROVALS = 2


class AccessStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ACCESS_TRANSITIONS: Mapping[AccessStatus, frozenset[AccessStatus]] = {
    AccessStatus.PENDING: frozenset(
        {AccessStatus.APPROVED, AccessStatus.DENIED, AccessStatus.CANCELLED, AccessStatus.EXPIRED}
    ),
    AccessStatus.APPROVED: frozenset(),
    AccessStatus.DENIED: frozenset(),
    AccessStatus.CANCELLED: frozenset(),
    AccessStatus.EXPIRED: frozenset(),
}


class IllegalAccessTransition(BadRequest):
    code = "illegal_transition"


def check_access_transition(current: AccessStatus, target: AccessStatus) -> None:
    if target not in ACCESS_TRANSITIONS[current]:
        raise IllegalAccessTransition(
            f"a request that is {current.value} cannot become {target.value}",
            rule="access-lifecycle",
        )


@dataclass(frozen=True, slots=True)
class Approver:
    id: str
    org_internal: bool


def approvals_satisfied(
    approvers: list[Approver], *, vendor_sponsor: str | None, needed: int = CRITICAL_APPROVALS
) -> bool:
    """Whether these (distinct, role-checked, not the requester) approvals are enough."""
    if len({a.id for a in approvers}) < needed:
        return False
    if not any(a.org_internal for a in approvers):
        return False
    return vendor_sponsor is None or any(a.id == vendor_sponsor for a in approvers)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    principal_id: str
    model_id: str
    starts_at: float
    expires_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.expires_at
