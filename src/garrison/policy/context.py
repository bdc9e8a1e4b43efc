"""The context the gateway computes for a policy decision, from the snapshot and the call."""

from __future__ import annotations

import ipaddress
import time

from garrison.domain import Credential, Model, Principal, VendorStatus
from garrison.domain.snapshot import Snapshot
from garrison.policy.engine import Context

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def call_context(
    snap: Snapshot,
    principal: Principal,
    model: Model,
    credential: Credential | None,
    address: Address | None,
    now: float,
    *,
    justification: bool = False,
) -> Context:
    # No address (an explanation asked without one): take it to be an allowed one.
    if credential is None:
        key_ok = False
    elif not credential.networks or address is None:
        key_ok = True
    else:
        key_ok = credential.allows_address(address)
    clock = time.gmtime(now)
    grant = snap.has_grant(principal.id, model.id, now)
    org = snap.orgs.get(principal.org_id)
    terms = org.vendor if org is not None else None
    if terms is None:
        return Context(
            key_network_ok=key_ok,
            grant=grant,
            justification=justification,
            hour_utc=clock.tm_hour,
            weekday=clock.tm_wday,
        )
    return Context(
        vendor_active=terms.status is VendorStatus.ACTIVE,
        vendor_in_contract=terms.in_contract(now),
        vendor_network_ok=address is None or terms.allows_address(address),
        vendor_ceiling_level=int(terms.ceiling_level),
        vendor_ceiling_compartments=terms.ceiling_compartments,
        key_network_ok=key_ok,
        grant=grant,
        justification=justification,
        hour_utc=clock.tm_hour,
        weekday=clock.tm_wday,
    )
