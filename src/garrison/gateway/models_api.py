"""``GET /v1/models`` and ``GET /v1/models/{id}``: only models the caller may use are
described (no oracle for the rest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from garrison.domain import Model, Principal, Reason, UpstreamApi
from garrison.domain.outcomes import CallOutcome
from garrison.errors import (
    NotFound,
)
from garrison.gateway import listing
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import (
    REQUEST_ID_HEADER,
)

if TYPE_CHECKING:
    pass
from garrison.gateway.admission import admitted, decide, model_locked
from garrison.gateway.call import Call, deny
from garrison.gateway.edge import STATE_KEY, new_request_id
from garrison.gateway.outcome import end_call
from garrison.gateway.shared_admission import shared_proof

_JSON = "application/json"


def visible_models(principal: Principal, state: GatewayState, call: Call) -> list[Model]:
    now = state.clock()
    return sorted(
        (
            m
            for m in state.snapshot.models.values()
            if decide(state, principal, m, call, now, justification=True).allowed
        ),
        key=lambda m: m.name,
    )


def printable_name(name: str) -> str:
    """A caller-chosen model name as kept for the record: printable, at most 200 characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in name[:200])


def hidden_reasons(
    state: GatewayState, principal: Principal, model: Model, call: Call, now: float
) -> tuple[Reason, ...]:
    """Why ``model`` is hidden from this caller (``()``: visible). Visible is what
    ``/v1/models`` lists: allowed (a justification assumed given) and not locked."""
    decision = decide(state, principal, model, call, now, justification=True)
    if not decision.allowed:
        return decision.reasons
    return (Reason.LOCKED,) if model_locked(state, model, now) else ()


def other_api(
    state: GatewayState,
    principal: Principal,
    model: Model,
    call: Call,
    api: UpstreamApi,
    now: float,
) -> web.Response:
    """A model called through the API it does not speak: a caller who may use it is told
    which API it speaks; anyone else gets exactly the answer for a model that does not exist."""
    hidden = hidden_reasons(state, principal, model, call, now)
    if hidden:
        return deny(state, call, api, NotFound(), hidden)
    return deny(state, call, api, listing.wrong_api(model), (Reason.MODEL_WRONG_API,))


async def list_models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    anthropic = "anthropic-version" in request.headers
    api = UpstreamApi.ANTHROPIC if anthropic else UpstreamApi.OPENAI
    call = Call("models", new_request_id(), "")
    now = state.clock()
    principal = admitted(request, state, call, api, now)
    if isinstance(principal, web.Response):
        return principal
    if call.proof is not None and (refused := await shared_proof(state, call, api)) is not None:
        return refused
    models = [m for m in visible_models(principal, state, call) if not model_locked(state, m, now)]
    data = listing.models_list(api, models)
    end_call(state, call, CallOutcome.OK, status=200, metered=False, listed=len(models))
    return web.Response(
        body=orjson.dumps(data), content_type=_JSON, headers={REQUEST_ID_HEADER: call.request_id}
    )


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{id}``: a model the caller may see, or the 404 of a missing one."""
    state = request.app[STATE_KEY]
    api = UpstreamApi.ANTHROPIC if "anthropic-version" in request.headers else UpstreamApi.OPENAI
    call = Call("models", new_request_id(), "")
    now = state.clock()
    principal = admitted(request, state, call, api, now)
    if isinstance(principal, web.Response):
        return principal
    if call.proof is not None and (refused := await shared_proof(state, call, api)) is not None:
        return refused
    name = request.match_info["model_id"]
    model = state.snapshot.models.get(name)
    if model is None:
        call.model = printable_name(name)
        return deny(state, call, api, NotFound(), (Reason.MODEL_UNKNOWN,))
    call.model = model.name
    hidden = hidden_reasons(state, principal, model, call, now)
    if hidden:
        return deny(state, call, api, NotFound(), hidden)
    end_call(state, call, CallOutcome.OK, status=200, metered=False)
    return web.Response(
        body=orjson.dumps(listing.model_entry(api, model)),
        content_type=_JSON,
        headers={REQUEST_ID_HEADER: call.request_id},
    )
