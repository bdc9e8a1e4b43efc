"""Forwarding an admitted call to its upstream: plain answers read within their byte
budget and deadline with the model name rewritten; streams handed to ``stream``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import orjson
from aiohttp import web

from garrison.domain import Model
from garrison.domain.outcomes import CallOutcome
from garrison.errors import (
    UpstreamFailed,
    UpstreamTimeout,
)
from garrison.gateway.answers import (
    CallDeadline,
    Charge,
    ResponseBudgetExhausted,
    answer_usage,
    read_answer,
    renamed_length,
    renamed_whole,
    write_renamed,
)
from garrison.gateway.apis import Endpoint
from garrison.gateway.call import Call
from garrison.gateway.containment import uncancel
from garrison.gateway.credential_echo import model_answer_forms, scrub_bytes
from garrison.gateway.outcome import cut_response, end_call, upstream_error
from garrison.gateway.state import GatewayState
from garrison.gateway.stream import forward_stream
from garrison.gateway.upstream import REQUEST_ID_HEADER, upstream_headers
from garrison.gateway.upstream_call import client_model_bytes, post_upstream, refused_answer

log = logging.getLogger("garrison.gateway")

_JSON = "application/json"


async def forward_any(
    request: web.Request,
    state: GatewayState,
    endpoint: Endpoint,
    model: Model,
    call: Call,
    payload: bytes,
    injected_usage: bool,
    stream: bool,
) -> web.StreamResponse:
    if stream:
        return await forward_stream(request, state, endpoint, model, call, payload, injected_usage)
    charge = Charge(state.answers, state.limits)
    try:
        return await forward(request, state, endpoint, model, call, payload, charge)
    finally:
        charge.release()


async def forward(
    request: web.Request,
    state: GatewayState,
    endpoint: Endpoint,
    model: Model,
    call: Call,
    payload: bytes,
    charge: Charge,
) -> web.StreamResponse:
    api = endpoint.api
    headers = upstream_headers(endpoint, model, call.request_id, request.headers)
    # Asked, not taken from the state: the deadline must be on the running loop's clock.
    loop = asyncio.get_running_loop()
    # The whole call, connect to last byte (answers.py): a dripping upstream cannot stretch it.
    deadline = loop.time() + state.limits.nonstream_max_seconds
    call.forwarded = time.perf_counter()
    try:
        async with (
            asyncio.timeout_at(deadline),
            post_upstream(state, model, endpoint, payload, headers) as resp,
        ):
            refused = await refused_answer(state, call, api, model, resp)
            if refused is not None:
                return refused
            raw = await read_answer(resp, state.limits.max_response_bytes, charge)
    except asyncio.CancelledError:
        if call.cut is not None:
            # Cut by a lock: leaving the upstream context above dropped its connection.
            uncancel()
            return cut_response(state, call, api)
        end_call(state, call, CallOutcome.CLIENT_CLOSED, status=499)
        raise
    except ResponseBudgetExhausted as exc:
        log.warning("answer for %s dropped: %s", call.request_id, exc.detail)
        return upstream_error(state, call, api, exc, CallOutcome.RESPONSE_BUDGET)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        if loop.time() >= deadline:
            return upstream_error(state, call, api, CallDeadline(), CallOutcome.CALL_DEADLINE)
        return upstream_error(state, call, api, UpstreamTimeout(), CallOutcome.UPSTREAM_TIMEOUT)
    except (aiohttp.ClientError, UpstreamFailed) as exc:
        log.warning("upstream failure for %s: %s", call.request_id, type(exc).__name__)
        return upstream_error(state, call, api, UpstreamFailed(), CallOutcome.UPSTREAM_ERROR)
    try:
        usage = answer_usage(api, raw)
    except orjson.JSONDecodeError:
        return upstream_error(state, call, api, UpstreamFailed(), CallOutcome.UPSTREAM_BAD_JSON)
    old, new = client_model_bytes(model)
    # The model's own credential never reaches the caller (a copy only when it is there).
    raw = scrub_bytes(raw, model_answer_forms(model))
    # Our own content type: the upstream's header is its text (it can carry the credential).
    answer_headers = {"content-type": _JSON, REQUEST_ID_HEADER: call.request_id}
    length = renamed_length(raw, old, new)
    end_call(
        state,
        call,
        CallOutcome.OK,
        status=200,
        usage=usage,
        bytes_out=length,
        ttfb=time.perf_counter() - call.started,
    )
    # Written here, so the budget holds the answer until it is sent.
    whole = renamed_whole(raw, old, new, length)
    if whole is not None:
        # Sent with its head in one write: a few µs cheaper than a stream of it.
        answer = web.Response(body=whole, headers=answer_headers)
        await answer.prepare(request)
        await answer.write_eof()
        return answer
    response = web.StreamResponse(headers=answer_headers)
    response.content_length = length
    await response.prepare(request)
    await write_renamed(response, raw, old, new)  # renamed piece by piece
    await response.write_eof()
    return response
