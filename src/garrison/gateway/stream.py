"""Streamed answers: passed through event by event as they arrive, metered, and cut
when a lock or the stream's limits say so.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from aiohttp import web

from garrison.domain import Model, UpstreamApi
from garrison.domain.outcomes import CallOutcome
from garrison.errors import (
    GarrisonError,
    UpstreamFailed,
    UpstreamTimeout,
)
from garrison.gateway import apis
from garrison.gateway.apis import Endpoint
from garrison.gateway.call import Call
from garrison.gateway.containment import uncancel
from garrison.gateway.outcome import cut_as, cut_response, end_call, upstream_error
from garrison.gateway.sse_relay import StreamRelay
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import REQUEST_ID_HEADER, upstream_headers
from garrison.gateway.upstream_call import post_upstream, refused_answer

log = logging.getLogger("garrison.gateway")


class StreamLimit(Exception):
    """The stream ran past its longest duration."""


async def forward_stream(
    request: web.Request,
    state: GatewayState,
    endpoint: Endpoint,
    model: Model,
    call: Call,
    payload: bytes,
    injected_usage: bool,
) -> web.StreamResponse:
    api = endpoint.api
    headers = upstream_headers(endpoint, model, call.request_id, request.headers)
    relay = StreamRelay(api, model, drop_usage_chunk=injected_usage)
    response: web.StreamResponse | None = None
    bytes_out = 0
    ttfb: float | None = None
    outcome = CallOutcome.OK
    status = 200
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.limits.stream_max_seconds
    call.forwarded = time.perf_counter()
    try:
        async with post_upstream(state, model, endpoint, payload, headers) as resp:
            refused = await refused_answer(state, call, api, model, resp)
            if refused is not None:
                return refused
            response = web.StreamResponse(
                status=200,
                headers={
                    "content-type": "text/event-stream",
                    "cache-control": "no-cache",
                    REQUEST_ID_HEADER: call.request_id,
                },
            )
            await response.prepare(request)
            try:
                async with asyncio.timeout_at(deadline):
                    async for data in resp.content.iter_any():
                        out = relay.feed(data)
                        if relay.overflow:
                            raise UpstreamFailed("SSE event over the size limit")
                        if not out:
                            continue
                        if ttfb is None:
                            ttfb = time.perf_counter() - call.started
                        bytes_out += len(out)
                        await response.write(out)
            except TimeoutError:
                if loop.time() >= deadline:
                    raise StreamLimit from None
                raise
            rest = relay.flush()
            if rest:
                bytes_out += len(rest)
                await response.write(rest)
    except asyncio.CancelledError:
        if call.cut is None:
            end_call(
                state,
                call,
                CallOutcome.CLIENT_CLOSED,
                status=499,
                usage=relay.usage,
                bytes_out=bytes_out,
                ttfb=ttfb,
            )
            raise
        # Cut by a lock: the upstream connection was dropped on the way out of its context;
        # the client gets a final error event (or a plain 403 if nothing was sent yet).
        uncancel()
        if response is None:
            return cut_response(state, call, api)
        outcome, cut_error = cut_as(call)
        status = cut_error.status
        await end_stream(response, api, cut_error)
    except StreamLimit:
        outcome, status = CallOutcome.STREAM_LIMIT, 504
        error: GarrisonError = UpstreamTimeout(
            public_message="The stream exceeded its longest duration."
        )
        await end_stream(response, api, error)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        outcome, status = CallOutcome.UPSTREAM_TIMEOUT, 504
        if response is None:
            return upstream_error(state, call, api, UpstreamTimeout(), outcome)
        await end_stream(response, api, UpstreamTimeout())
    except (aiohttp.ClientError, UpstreamFailed) as exc:
        log.warning("upstream failure for %s: %s", call.request_id, type(exc).__name__)
        outcome, status = CallOutcome.UPSTREAM_ERROR, 502
        if response is None:
            return upstream_error(state, call, api, UpstreamFailed(), outcome)
        await end_stream(response, api, UpstreamFailed())
    except ConnectionResetError:
        outcome, status = CallOutcome.CLIENT_CLOSED, 499
    end_call(
        state,
        call,
        outcome,
        status=status,
        usage=relay.usage,
        bytes_out=bytes_out,
        ttfb=ttfb,
    )
    assert response is not None
    return response


async def end_stream(
    response: web.StreamResponse | None, api: UpstreamApi, exc: GarrisonError
) -> None:
    if response is None:
        return
    try:
        await response.write(apis.stream_error_event(api, exc))
        await response.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass
