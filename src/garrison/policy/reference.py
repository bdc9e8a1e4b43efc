"""The base policies in plain Python: the reference model the Cedar engine is checked against
(exhaustively on a small world, and by property tests). Not used on the hot path.

Each rule here is one policy of ``base.cedar``; a denial lists every rule that forbids.
"""

from __future__ import annotations

from garrison.domain import Level, Model, Principal, Reason
from garrison.policy.engine import Context


def reference_reasons(
    principal: Principal, model: Model, context: Context, *, vendor: bool
) -> tuple[Reason, ...]:
    """The reasons the base policies deny with; empty means allowed."""
    reasons: list[Reason] = []
    if principal.clearance < model.level:
        reasons.append(Reason.CLEARANCE_LEVEL)
    if not model.compartments <= principal.compartments:
        reasons.append(Reason.CLEARANCE_COMPARTMENT)
    if not context.key_network_ok:
        reasons.append(Reason.CREDENTIAL_NETWORK)
    if vendor:
        if not context.vendor_active:
            reasons.append(Reason.VENDOR_INACTIVE)
        if not context.vendor_in_contract:
            reasons.append(Reason.VENDOR_CONTRACT)
        if not context.vendor_network_ok:
            reasons.append(Reason.VENDOR_NETWORK)
        if model.level > context.vendor_ceiling_level or not (
            model.compartments <= context.vendor_ceiling_compartments
        ):
            reasons.append(Reason.VENDOR_CEILING)
    if model.level >= Level.CRITICAL and not context.grant:
        reasons.append(Reason.GRANT_REQUIRED)
    if model.level >= context.mfa_from_level and context.mfa_capable and not context.mfa:
        reasons.append(Reason.MFA_REQUIRED)
    if not context.person_key_ok:
        reasons.append(Reason.PERSON_BEARER_KEY)
    if model.requires_justification and not context.justification:
        reasons.append(Reason.JUSTIFICATION_REQUIRED)
    return tuple(reasons)
