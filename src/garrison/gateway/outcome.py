"""Every way a forwarded call ends, and the one event that records it
(``request.completed``): finished, failed upstream, redirected, cut by a lock or by
shutdown.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from garrison.audit import EventName
from garrison.domain import Model, Reason, UpstreamApi
from garrison.errors import (
    Forbidden,
    GarrisonError,
    ShuttingDown,
    UpstreamFailed,
)
from garrison.gateway import apis
from garrison.gateway.credential_echo import model_key
from garrison.gateway.limits import MAX_UPSTREAM_ERROR_BYTES
from garrison.gateway.metering import Usage
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream_errors import client_message

if TYPE_CHECKING:
    pass
from garrison.gateway.call import Call, record_later
from garrison.gateway.edge import error_response
from garrison.gateway.upstream_call import read_all

log = logging.getLogger("garrison.gateway")


def cut_as(call: Call) -> tuple[str, GarrisonError]:
    """The outcome and the client's error for a cut call: a lock or a withdrawn standing
    (403), or the process stopping past its drain deadline (503: retry elsewhere)."""
    assert call.cut is not None
    if call.cut.reason is Reason.SHUTTING_DOWN:
        return "shutdown", ShuttingDown()
    return "cut", Forbidden()


def cut_response(state: GatewayState, call: Call, api: UpstreamApi) -> web.Response:
    """The answer to a call cut before its response started."""
    assert call.cut is not None
    outcome, error = cut_as(call)
    if call.allowed:
        complete(
            state, call, status=error.status, outcome=outcome, usage=None, bytes_out=0, ttfb=None
        )
    else:
        record_later(
            state,
            call.event(
                EventName.REQUEST_DENIED,
                state.clock(),
                status=error.status,
                reasons=[call.cut.reason.value],
                lock_id=call.cut.lock_id,
            ),
        )
    return error_response(api, error, call.request_id)


async def upstream_failure(
    resp: aiohttp.ClientResponse, model: Model
) -> tuple[GarrisonError, dict[str, Any] | None]:
    """The caller's error for an upstream 4xx/5xx, and for a 4xx the audit field naming the
    message shape the caller was shown (``generic``: the status's own message)."""
    try:
        raw = await read_all(resp, MAX_UPSTREAM_ERROR_BYTES)
    except UpstreamFailed:
        raw = b""
    if 400 <= resp.status < 500:
        message, shape = client_message(
            raw, upstream_model=model.upstream_model, model_name=model.name, key=model_key(model)
        )
        exc = apis.error_for_upstream_status(resp.status, message)
        return exc, {"upstream_message": shape}
    return UpstreamFailed(f"upstream answered {resp.status}"), None


def complete(
    state: GatewayState,
    call: Call,
    *,
    status: int,
    outcome: str,
    usage: Usage | None,
    bytes_out: int,
    ttfb: float | None,
    extra: dict[str, Any] | None = None,
) -> None:
    state.outcomes[outcome] += 1
    now = time.perf_counter()
    duration = now - call.started
    state.latency.duration.observe(duration)
    if ttfb is not None:
        state.latency.ttfb.observe(ttfb)
    if call.forwarded is not None:
        state.latency.added.observe(call.forwarded - call.started)
        state.latency.upstream.observe(now - call.forwarded)
    if state.model_outcomes is not None and call.model is not None:
        state.model_outcomes[(call.model, outcome)] += 1
    extra = dict(extra) if extra else {}
    if call.cut is not None:
        extra.update(reasons=[call.cut.reason.value], lock_id=call.cut.lock_id)
    if usage is not None and usage.flags:
        extra["usage_flags"] = sorted(usage.flags)
        extra["reasons"] = [*extra.get("reasons", ()), Reason.UPSTREAM_USAGE_INVALID.value]
    record_later(
        state,
        call.event(
            EventName.REQUEST_COMPLETED,
            state.clock(),
            **extra,
            status=status,
            outcome=outcome,
            tokens_in=usage.tokens_in if usage else None,
            tokens_out=usage.output_tokens if usage else None,
            bytes_out=bytes_out,
            duration_ms=round(duration * 1000, 3),
            ttfb_ms=None if ttfb is None else round(ttfb * 1000, 3),
        ),
    )


def upstream_error(
    state: GatewayState,
    call: Call,
    api: UpstreamApi,
    exc: GarrisonError,
    outcome: str,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    complete(
        state,
        call,
        status=exc.status,
        outcome=outcome,
        usage=None,
        bytes_out=0,
        ttfb=None,
        extra=extra,
    )
    return error_response(api, exc, call.request_id)


def upstream_redirect(
    state: GatewayState, call: Call, api: UpstreamApi, status: int
) -> web.Response:
    """A 3xx from the upstream: not followed (its target is never contacted), a 502."""
    log.warning("upstream answered %d (redirect refused) for %s", status, call.request_id)
    exc = UpstreamFailed(f"upstream answered {status}")
    complete(
        state,
        call,
        status=exc.status,
        outcome="upstream_redirect",
        usage=None,
        bytes_out=0,
        ttfb=None,
        extra={"reasons": [Reason.UPSTREAM_REDIRECT.value], "upstream_status": status},
    )
    return error_response(api, exc, call.request_id)
