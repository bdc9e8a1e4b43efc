"""Admission of a model call: authenticate → locks → the standing rules (Cedar)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from garrison.audit import EventName
from garrison.domain import Model, Principal, Reason, UpstreamApi
from garrison.errors import (
    Forbidden,
)
from garrison.gateway.state import GatewayState
from garrison.identity import authenticate
from garrison.identity.token_auth import DPOP_HEADER, authenticate_token, dpop_token
from garrison.policy.context import call_context
from garrison.policy.engine import PolicyDecision

if TYPE_CHECKING:
    pass
from garrison.gateway.call import Call, record_later
from garrison.gateway.edge import error_response, peer_address, presented_key

log = logging.getLogger("garrison.gateway")


NO_ENGINE = PolicyDecision(False, (Reason.POLICY_ERROR,), (), ("no policy engine loaded",))


def authenticated(
    request: web.Request, state: GatewayState, call: Call, now: float
) -> tuple[Principal | None, Reason | None]:
    address = peer_address(request, state)
    call.address = str(address)
    call.peer = address
    snap = state.snapshot
    token = dpop_token(request.headers.get("authorization"))
    if token is not None:
        bound = authenticate_token(
            token,
            request.headers.getall(DPOP_HEADER, []),
            method=request.method,
            path=request.rel_url.raw_path,
            tokens=state.tokens,
            principals=snap.principals,
            orgs=snap.orgs,
            now=now,
            address=address,
        )
        call.session = bound.session
        call.credential_id = bound.auth.key_id if bound.session is not None else None
        call.presented_key_id = bound.auth.key_id if bound.session is None else None
        result = bound.auth
        if result.principal is not None:
            call.principal_id = result.principal.id
            call.org_id = result.principal.org_id
        return (result.principal if result.ok else None), result.reason
    result = authenticate(
        presented_key(request),
        credentials=snap.credentials,
        principals=snap.principals,
        orgs=snap.orgs,
        pepper=state.pepper,
        now=now,
        address=address,
    )
    call.credential_id = result.key_id if result.credential is not None else None
    if result.credential is None and result.key_id is not None:
        call.presented_key_id = result.key_id
    if result.principal is not None:
        call.principal_id = result.principal.id
        call.org_id = result.principal.org_id
    return (result.principal if result.ok else None), result.reason


def locked(
    state: GatewayState, call: Call, api: UpstreamApi, now: float, *, model_only: bool = False
) -> web.Response | None:
    """A 403 if a lock covers this call (the audit event names the lock), else None.
    ``model_only``: the caller was checked already (and is a live call, which any later lock
    on it cuts); only its model remains to check."""
    locks = state.snapshot.locks
    if model_only:
        lock = locks.covering(now, model_id=call.model_id, include_global=False)
    else:
        lock = locks.covering(
            now,
            credential_id=call.credential_id,
            principal_id=call.principal_id,
            org_id=call.org_id,
            address=call.peer,
        )
    if lock is None:
        return None
    state.refusals[Reason.LOCKED.value] += 1
    record_later(
        state,
        call.event(
            EventName.REQUEST_DENIED,
            state.clock(),
            status=403,
            reasons=[Reason.LOCKED.value],
            lock_id=lock.id,
        ),
    )
    return error_response(api, Forbidden(), call.request_id)


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
