"""Admission limits over every replica, and what a call meets when they cannot be asked.

After a call takes its slots in this process (``admission_limits.Admission.enter``):

    shared limits ([storage] redis_url) → one round trip: the DPoP jti, then the
    credential's and the principal's calls in flight, then the principal's calls per minute
        admitted        → the call holds a lease, given back with its ticket
        over a limit    → 429 (credential.concurrency, principal.concurrency, principal.rate)
        proof replayed  → 401 dpop.replayed (on another replica, or on this one)
        Redis down      → a call with a DPoP proof: 503 dpop.replay_unchecked (its proof
                          cannot be checked for replay: fail closed); any other call counts
                          against this process's rate, and once its model is known a
                          restricted or critical one is refused, 503
                          limits.shared_unavailable; lower levels go on (fail open to the
                          per-process limits)
    no shared limits → this process's rate (the embedded default)
"""

from __future__ import annotations

import math

from aiohttp import web

from garrison.domain import Level, Model, Reason, UpstreamApi
from garrison.errors import Overloaded, Unauthenticated
from garrison.gateway.admission_limits import CallRateLimited, ConcurrencyLimited
from garrison.gateway.call import Call, deny
from garrison.gateway.state import GatewayState
from garrison.identity.dpop import DPOP_REPLAY_PER_OWNER_MAX
from garrison.shared.verdicts import ProofEntry, SharedVerdict


class SharedLimitsUnavailable(Overloaded):
    default_message = "The gateway cannot check its limits right now; retry later."


_OVER = {
    SharedVerdict.CREDENTIAL_CONCURRENCY: Reason.CREDENTIAL_CONCURRENCY,
    SharedVerdict.PRINCIPAL_CONCURRENCY: Reason.PRINCIPAL_CONCURRENCY,
}
_PROOF = {
    SharedVerdict.REPLAYED: Reason.DPOP_REPLAY,
    SharedVerdict.REPLAY_FULL: Reason.DPOP_REPLAY_FULL,
}


def _rate_refusal(
    state: GatewayState, call: Call, api: UpstreamApi, retry_after_s: float
) -> web.Response:
    refused = deny(state, call, api, CallRateLimited(), (Reason.PRINCIPAL_RATE,))
    refused.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return refused


def _local_rate(
    state: GatewayState, call: Call, api: UpstreamApi, principal_id: str
) -> web.Response | None:
    wait = state.admission.rate.take(
        principal_id, state.limits.max_calls_per_minute_per_principal, state.clock()
    )
    return None if wait <= 0 else _rate_refusal(state, call, api, wait)


def _entry(state: GatewayState, call: Call) -> ProofEntry | None:
    proof = call.proof
    if proof is None:
        return None
    ttl_s = proof.expires_at - state.clock()
    return ProofEntry(proof.replay_key, ttl_s, proof.owner, DPOP_REPLAY_PER_OWNER_MAX)


async def shared_proof(state: GatewayState, call: Call, api: UpstreamApi) -> web.Response | None:
    """For calls that take no slot (the models list): record the call's DPoP replay entry
    in the shared cache; None when new (or nothing to record), else the refusal."""
    shared, entry = state.shared, _entry(state, call)
    if shared is None or entry is None:
        return None
    verdict = await shared.record_proof(entry)
    if verdict is SharedVerdict.ADMITTED:
        return None
    if verdict is SharedVerdict.UNAVAILABLE:
        state.shared_fallbacks += 1
        reason = Reason.DPOP_REPLAY_UNCHECKED
        return deny(state, call, api, SharedLimitsUnavailable(), (reason,))
    return deny(state, call, api, Unauthenticated(), (_PROOF[verdict],))


async def admit_shared(
    state: GatewayState, call: Call, api: UpstreamApi, principal_id: str
) -> web.Response | None:
    """None when the call may go on (holding its lease, if any), else the refusal."""
    shared = state.shared
    if shared is None:
        return _local_rate(state, call, api, principal_id)
    assert call.credential_id is not None
    limits = state.limits
    entry = _entry(state, call)
    answer = await shared.enter(
        call.credential_id,
        principal_id,
        per_credential=limits.max_concurrent_per_credential,
        per_principal=limits.max_concurrent_per_principal,
        per_minute=limits.max_calls_per_minute_per_principal,
        proof=entry,
    )
    verdict = answer.verdict
    if verdict is SharedVerdict.ADMITTED:
        call.lease = answer.lease
        return None
    if verdict is SharedVerdict.UNAVAILABLE:
        state.shared_fallbacks += 1
        if entry is not None:
            reason = Reason.DPOP_REPLAY_UNCHECKED
            return deny(state, call, api, SharedLimitsUnavailable(), (reason,))
        call.shared_down = True
        return _local_rate(state, call, api, principal_id)
    if verdict is SharedVerdict.RATE_LIMITED:
        return _rate_refusal(state, call, api, answer.retry_after_s)
    if verdict in _PROOF:
        return deny(state, call, api, Unauthenticated(), (_PROOF[verdict],))
    return deny(state, call, api, ConcurrencyLimited(), (_OVER[verdict],))


def shared_refusal(
    state: GatewayState, call: Call, api: UpstreamApi, model: Model
) -> web.Response | None:
    """503 for a call to a restricted or critical model admitted while the shared limits
    could not be asked (fail closed where the limits matter most); None otherwise."""
    if not call.shared_down or model.level < Level.RESTRICTED:
        return None
    reason = Reason.SHARED_LIMITS_UNAVAILABLE
    return deny(state, call, api, SharedLimitsUnavailable(), (reason,))
