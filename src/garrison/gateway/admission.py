"""Admission of a model call: the one admission step both planes take
(``garrison.edge.admission``: authenticate → locks), then the standing rules of the policy
engine for the model asked for, and the model's own locks."""

from __future__ import annotations

import logging

from aiohttp import web

from garrison.domain import Model, Principal, Reason, UpstreamApi
from garrison.domain.locks import Lock
from garrison.edge.admission import admit
from garrison.edge.client_address import address_text
from garrison.errors import Forbidden, Unauthenticated
from garrison.gateway.call import Call, deny, record_later
from garrison.gateway.edge import error_response, peer_address
from garrison.gateway.state import GatewayState
from garrison.policy.context import call_context
from garrison.policy.engine import PolicyDecision

log = logging.getLogger("garrison.gateway")


NO_ENGINE = PolicyDecision(False, (Reason.POLICY_ERROR,), (), ("no policy engine loaded",))


def admitted(
    request: web.Request, state: GatewayState, call: Call, api: UpstreamApi, now: float
) -> Principal | web.Response:
    """The caller of a data-plane call, or the refusal (recorded, in ``api``'s shape): 401
    with the authentication or standing reason, 403 when a lock (a global lockdown too)
    covers the caller. Fills ``call`` with what the audit events name either way."""
    address = peer_address(request, state)
    call.address = address_text(address)
    call.peer = address
    # With shared limits, a proof's jti is recorded in Redis by the call's one admission
    # round trip (gateway.shared_admission), after this process's own replay check here.
    caller = admit(
        request, state, now, address, include_global=True, defer_replay=state.shared is not None
    )
    auth = caller.auth
    call.session = caller.session
    call.proof = caller.proof
    call.credential_id = caller.credential_id
    if caller.session is None and auth.credential is None and auth.key_id is not None:
        call.presented_key_id = auth.key_id  # a key that did not authenticate
    if auth.principal is not None:
        call.principal_id = auth.principal.id
        call.org_id = auth.principal.org_id
    if caller.lock is not None:
        return lock_refusal(state, call, api, caller.lock)
    if caller.refusal is not None or auth.principal is None:
        return deny(
            state, call, api, Unauthenticated(), (caller.refusal or Reason.CREDENTIAL_MISSING,)
        )
    return auth.principal


def lock_refusal(state: GatewayState, call: Call, api: UpstreamApi, lock: Lock) -> web.Response:
    """A 403 for a call a lock covers; its audit event names the lock."""
    state.refusals[Reason.LOCKED.value] += 1
    record_later(
        state,
        call.denied_event(
            state.clock(), status=403, reasons=(Reason.LOCKED.value,), by_lock=True, lock_id=lock.id
        ),
    )
    return error_response(api, Forbidden(), call.request_id)


def model_lock(
    state: GatewayState, call: Call, api: UpstreamApi, now: float
) -> web.Response | None:
    """A 403 if a lock now covers the model of this admitted call (which, being live, any
    later lock on its caller cuts), else None."""
    lock = state.snapshot.locks.covering(now, model_id=call.model_id, include_global=False)
    return None if lock is None else lock_refusal(state, call, api, lock)


# ── models list, health ────────────────────────────────────────────────────────────────────
def decide(
    state: GatewayState,
    principal: Principal,
    model: Model,
    call: Call,
    now: float,
    *,
    justification: bool = False,
) -> PolicyDecision:
    """The policy engine's decision for this call (deny if there is no engine yet)."""
    engine = state.policy
    if engine is None:
        return NO_ENGINE
    snap = state.snapshot
    credential = snap.credentials.get(call.credential_id or "")
    context = call_context(
        snap,
        principal,
        model,
        credential,
        call.peer,
        now,
        justification=justification,
        session_mfa=call.session.mfa if call.session is not None else None,
        session_amr=call.session.amr if call.session is not None else (),
        identity=state.identity_policy,
    )
    decision = engine.decide(principal, model, context)
    if decision.errors:
        log.error(
            "POLICY EVALUATION ERROR for %s on %s (denied): %s",
            principal.id,
            model.name,
            "; ".join(decision.errors[:3]),
        )
    return decision


def model_locked(state: GatewayState, model: Model, now: float) -> bool:
    locks = state.snapshot.locks
    return bool(locks) and locks.covering(now, model_id=model.id, include_global=False) is not None
