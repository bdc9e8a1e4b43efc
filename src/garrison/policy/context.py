"""The context the gateway computes for a policy decision, from the snapshot and the call.

The vendor and key facts are the predicates of ``garrison.domain.standing`` (where the rules
that refuse a caller live); the base policies restate them so that an explanation, asked
without a call, gives the same answer."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from garrison.domain import Credential, Level, Model, Principal, PrincipalKind
from garrison.domain.snapshot import Snapshot
from garrison.domain.standing import key_network_ok
from garrison.policy.engine import Context

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    """The ``[identity]`` settings that enter every decision."""

    # Models at or above this level need MFA from credentials that can carry it.
    mfa_from_level: Level = Level.RESTRICTED
    # Highest level a person's API key may call (None: every level; NO_PEOPLE_KEYS: none).
    # Service accounts keep their keys at every level.
    people_key_max_level: int | None = None
    # Per level, the amr values of which a sign-in must show one for its MFA to count at
    # that level (e.g. critical: ("hwk",), a hardware key); a level not listed takes any MFA.
    mfa_amr_by_level: tuple[tuple[Level, frozenset[str]], ...] = ()

    def mfa_counts(self, level: Level, amr: tuple[str, ...]) -> bool:
        """Whether a sign-in that showed MFA with methods ``amr`` counts at ``level``."""
        for listed, methods in self.mfa_amr_by_level:
            if listed == level:
                return bool(methods & set(amr))
        return True


DEFAULT_IDENTITY_POLICY = IdentityPolicy()
# people_key_max_level for "people_bearer_keys = none": below every level.
NO_PEOPLE_KEYS = -1


def _token_fields(
    principal: Principal,
    model: Model,
    credential: Credential | None,
    session_mfa: bool | None,
    identity: IdentityPolicy,
    session_amr: tuple[str, ...],
) -> dict[str, Any]:
    person_key = (
        session_mfa is None and credential is not None and principal.kind is PrincipalKind.HUMAN
    )
    ceiling = identity.people_key_max_level
    return {
        "mfa_capable": session_mfa is not None,
        "mfa": bool(session_mfa) and identity.mfa_counts(model.level, session_amr),
        "mfa_from_level": int(identity.mfa_from_level),
        "person_key_ok": not (person_key and ceiling is not None and model.level > ceiling),
    }


def call_context(
    snap: Snapshot,
    principal: Principal,
    model: Model,
    credential: Credential | None,
    address: Address | None,
    now: float,
    *,
    justification: bool = False,
    session_mfa: bool | None = None,
    identity: IdentityPolicy = DEFAULT_IDENTITY_POLICY,
    session_amr: tuple[str, ...] = (),
) -> Context:
    """``session_mfa``: None for an API key; for a DPoP-bound sign-in token, whether its
    sign-in showed MFA (such a call has no key, so no key networks to be outside of), and
    ``session_amr`` how (a level may take only some methods: ``mfa_amr_by_level``)."""
    tokens = _token_fields(principal, model, credential, session_mfa, identity, session_amr)
    # No address (an explanation asked without one): take it to be an allowed one.
    if session_mfa is not None:
        key_ok = True
    else:
        key_ok = credential is not None and key_network_ok(credential, address)
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
            **tokens,
        )
    return Context(
        vendor_active=terms.active,
        vendor_in_contract=terms.in_contract(now),
        vendor_network_ok=address is None or terms.allows_address(address),
        vendor_ceiling_level=int(terms.ceiling_level),
        vendor_ceiling_compartments=terms.ceiling_compartments,
        key_network_ok=key_ok,
        grant=grant,
        justification=justification,
        hour_utc=clock.tm_hour,
        weekday=clock.tm_wday,
        **tokens,
    )
