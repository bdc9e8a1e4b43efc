"""The rules every directory write obeys, as pure checks (the store applies them inside its
write transaction, so what is checked is what is committed). Each raises ``BadRequest``
naming the rule:

* admin roles are known ones; a vendor principal holds only vendor roles, a service account
  none (``check_roles``, ``check_service_roles``);
* a vendor principal's clearance and compartments never exceed the vendor's ceiling
  (``check_ceiling``);
* a vendor key's networks lie within the vendor's (a key with none gets the vendor's), and
  no key outlives the contract (``key_terms``);
* a key lives at most ``KEY_MAX_LIFETIME_S`` and a rotated key overlaps its successor at
  most ``KEY_ROTATION_GRACE_MAX_S`` (``check_key_lifetime``, ``check_grace``).
"""

from __future__ import annotations

from collections.abc import Iterable

from garrison.domain.levels import Level
from garrison.domain.roles import VENDOR_ROLES as _VENDOR_ROLES
from garrison.domain.roles import Role
from garrison.domain.types import Network, PrincipalKind
from garrison.domain.vendor import VendorStatus, VendorTerms
from garrison.errors import BadRequest

# Keys never live longer than this (and default to it): a leaked key stops working on its own.
KEY_MAX_LIFETIME_S = 90 * 24 * 3600
# A rotated key may overlap its successor for at most this long: enough to roll a fleet of
# clients over, short enough that rotating after a leak still ends the old key today.
KEY_ROTATION_GRACE_MAX_S = 24 * 3600
# Seats per vendor: no contractor engagement needs more; a typo of 10x would.
SEAT_LIMIT_MAX = 10_000
# Admin roles. Vendor principals may hold only vendor-manager (for their own vendor).
ROLES = frozenset(r.value for r in Role)
VENDOR_ROLES = frozenset(r.value for r in _VENDOR_ROLES)
# Statuses in which a vendor may still gain people and keys.
ISSUING = (VendorStatus.ONBOARDING, VendorStatus.ACTIVE)


def check_key_lifetime(expires_in: float | None) -> float:
    """The lifetime of a new key: the maximum when none is asked for."""
    lifetime = KEY_MAX_LIFETIME_S if expires_in is None else expires_in
    if lifetime <= 0:
        raise BadRequest("key lifetime must be positive")
    if lifetime > KEY_MAX_LIFETIME_S:
        raise BadRequest(f"key lifetime exceeds the maximum of {KEY_MAX_LIFETIME_S // 86400} days")
    return lifetime


def check_grace(grace_s: float) -> float:
    if not 0 <= grace_s <= KEY_ROTATION_GRACE_MAX_S:
        raise BadRequest(f"grace must be between 0 and {KEY_ROTATION_GRACE_MAX_S // 3600} hours")
    return grace_s


def check_roles(roles: Iterable[str], *, vendor: bool) -> frozenset[str]:
    out = frozenset(r.strip() for r in roles)
    unknown = out - ROLES
    if unknown:
        raise BadRequest(
            f"unknown role(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(ROLES))})"
        )
    if vendor and out - VENDOR_ROLES:
        raise BadRequest(
            "a vendor principal may hold only the vendor-manager role "
            f"(asked for {', '.join(sorted(out - VENDOR_ROLES))})"
        )
    return out


def check_service_roles(kind: PrincipalKind, roles: frozenset[str]) -> None:
    """Admin actions must name a person: a service account's key, once leaked, would carry
    admin power with nobody to answer for it (and no MFA when SSO lands)."""
    if kind is PrincipalKind.SERVICE and roles:
        raise BadRequest("a service account cannot hold admin roles", rule="service-roles")


def check_ceiling(terms: VendorTerms, clearance: Level, compartments: frozenset[str]) -> None:
    if not terms.ceiling_allows(clearance, compartments):
        raise BadRequest(
            f"clearance {clearance.label} with compartments "
            f"{sorted(compartments)} exceeds the vendor's ceiling "
            f"({terms.ceiling_level.label}, {sorted(terms.ceiling_compartments)})",
            rule="vendor-ceiling",
        )


def check_seat_limit(seat_limit: int) -> int:
    if not 1 <= seat_limit <= SEAT_LIMIT_MAX:
        raise BadRequest(f"seat limit must be between 1 and {SEAT_LIMIT_MAX}")
    return seat_limit


def key_terms(
    terms: VendorTerms, networks: tuple[Network, ...], expires_at: float, now: float
) -> tuple[tuple[Network, ...], float]:
    """The networks and expiry a vendor key gets: within the vendor's, clipped to the contract."""
    if terms.status not in ISSUING:
        raise BadRequest(f"the vendor is {terms.status.value}: no key can be issued")
    if now >= terms.contract_end:
        raise BadRequest("the vendor's contract has ended", rule="vendor-contract")
    if not networks:
        networks = terms.networks
    outside = [str(n) for n in networks if not terms.covers_network(n)]
    if outside:
        raise BadRequest(
            f"{', '.join(outside)} is not within the vendor's networks "
            f"({', '.join(str(n) for n in terms.networks)})",
            rule="vendor-networks",
        )
    return networks, min(expires_at, terms.contract_end)
