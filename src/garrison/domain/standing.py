"""A caller's standing: the one home of the rules that say whether a key, its person and
their vendor may act at all, and in which order a refusal names them. Pure: clock and
address in.

Used wherever standing is judged: authentication of a key or a sign-in token
(``garrison.identity``), the admin plane's sign-in, and the cutting of live calls whose
standing went (``garrison.gateway.containment``). The policy engine's context reads the same
predicates (``VendorTerms.active``, ``in_contract``, ``allows_address``, ``key_network_ok``)
for the base Cedar policies that restate these rules.
"""

from __future__ import annotations

import ipaddress

from garrison.domain.reasons import Reason
from garrison.domain.types import Credential, Org, Principal, Status
from garrison.domain.vendor import VendorTerms

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def vendor_refusal(terms: VendorTerms | None, now: float, address: Address | None) -> Reason | None:
    """A vendor's people act only while it is active, inside its contract window (the instant
    the contract ends, with no job to run) and from its networks (``address`` None: a live
    call, whose address was checked when it began). None for a person of no vendor."""
    if terms is None:
        return None
    if not terms.active:
        return Reason.VENDOR_INACTIVE
    if not terms.in_contract(now):
        return Reason.VENDOR_CONTRACT
    if address is not None and not terms.allows_address(address):
        return Reason.VENDOR_NETWORK
    return None


def key_network_ok(credential: Credential, address: Address | None) -> bool:
    """The key may be used from ``address`` (None: not known here, taken to be allowed)."""
    return address is None or credential.allows_address(address)


def standing_refusal(
    *,
    credential: Credential | None,
    principal: Principal | None,
    org: Org | None,
    now: float,
    address: Address | None,
) -> Reason | None:
    """Why this caller may not act at all, or None. ``credential`` None: a sign-in token's
    caller or a person signing in (no key). The vendor's terms come before the key's own: a
    key is clipped to them, so the vendor reason is the one that explains the refusal."""
    if credential is not None and credential.revoked:
        return Reason.CREDENTIAL_REVOKED
    if principal is None or principal.status is not Status.ACTIVE:
        return Reason.PRINCIPAL_INACTIVE
    reason = vendor_refusal(org.vendor if org is not None else None, now, address)
    if reason is not None or credential is None:
        return reason
    if credential.expires_at is not None and now >= credential.expires_at:
        return Reason.CREDENTIAL_EXPIRED
    if not key_network_ok(credential, address):
        return Reason.CREDENTIAL_NETWORK
    return None
