"""Re-deciding a live call against a new snapshot: the same standing rules a new call gets.

A call is allowed once, when it starts; a stream can then run for half an hour. When the
directory changes under it (a clearance lowered, a model's level raised or a compartment
added, a vendor's ceiling narrowed, a grant revoked, the organisation's policy set changed),
the call is decided again, exactly as a new call from the same key, address and
justification would be decided now. A call the new snapshot would refuse is cut, with the
decision's first reason code (``containment.cut_covered`` ends it).
"""

from __future__ import annotations

from typing import Any

from garrison.domain import Reason
from garrison.policy.context import DEFAULT_IDENTITY_POLICY, IdentityPolicy, call_context
from garrison.policy.engine import PolicyEngine
from garrison.store.snapshot import Snapshot


def refusal(
    snap: Snapshot,
    engine: PolicyEngine | None,
    call: Any,
    now: float,
    identity: IdentityPolicy = DEFAULT_IDENTITY_POLICY,
) -> Reason | None:
    """Why the call's standing decision no longer holds in ``snap``, or None while it holds.

    Only calls past their decision are re-decided (``call.model_id`` is set once allowed).
    """
    if engine is None or getattr(call, "model_id", None) is None:
        return None
    principal = snap.principals.get(call.principal_id or "")
    if principal is None:
        return Reason.PRINCIPAL_INACTIVE
    model = snap.models.get(call.model or "")
    if model is None or model.id != call.model_id:
        return Reason.MODEL_UNKNOWN
    credential = snap.credentials.get(call.credential_id or "")
    session = getattr(call, "session", None)
    context = call_context(
        snap,
        principal,
        model,
        credential,
        call.peer,
        now,
        justification=bool(getattr(call, "justified", False)),
        session_mfa=session.mfa if session is not None else None,
        session_amr=session.amr if session is not None else (),
        identity=identity,
    )
    decision = engine.decide(principal, model, context)
    if decision.allowed:
        return None
    return decision.reasons[0] if decision.reasons else Reason.POLICY_ERROR
