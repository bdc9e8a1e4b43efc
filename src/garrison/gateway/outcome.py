"""Every way an admitted call ends, and the one place that records it: ``end_call`` writes
a live call's ``request.completed`` (finished, failed upstream, redirected, cut by a lock or
by shutdown, refused by the log, listed), ``ended_elsewhere`` the one of a call whose process
died. Nothing else in Garrison writes that event (a test holds it).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from aiohttp import web

from garrison.audit import AuditEvent, caller_address
from garrison.audit.payloads import CallFields, RequestCompleted
from garrison.domain import Reason, UpstreamApi
from garrison.domain.outcomes import CallOutcome, encoded
from garrison.errors import (
    Forbidden,
    GarrisonError,
    ShuttingDown,
    UpstreamFailed,
)
from garrison.gateway.call import Call, record_later
from garrison.gateway.edge import error_response
from garrison.gateway.metering import Usage
from garrison.gateway.state import GatewayState

log = logging.getLogger("garrison.gateway")


class UnfinishedCall(Protocol):
    """A call another process allowed and never ended (as ``store.instances`` finds it)."""

    @property
    def request_id(self) -> str: ...
    @property
    def principal_id(self) -> str | None: ...
    @property
    def credential_id(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def data(self) -> dict[str, Any]: ...


def cut_as(call: Call) -> tuple[CallOutcome, GarrisonError]:
    """The outcome and the client's error for a cut call: a lock or a withdrawn standing
    (403), or the process stopping past its drain deadline (503: retry elsewhere)."""
    assert call.cut is not None
    if call.cut.reason is Reason.SHUTTING_DOWN:
        return CallOutcome.SHUTDOWN, ShuttingDown()
    return CallOutcome.CUT, Forbidden()


def cut_response(state: GatewayState, call: Call, api: UpstreamApi) -> web.Response:
    """The answer to a call cut before its response started."""
    assert call.cut is not None
    outcome, error = cut_as(call)
    if call.allowed:
        end_call(state, call, outcome, status=error.status)
    else:
        record_later(
            state,
            call.denied_event(
                state.clock(),
                status=error.status,
                reasons=(call.cut.reason.value,),
                by_lock=True,
                lock_id=call.cut.lock_id,
            ),
        )
    return error_response(api, error, call.request_id)


def end_call(
    state: GatewayState,
    call: Call,
    outcome: CallOutcome,
    *,
    status: int,
    upstream_status: int | None = None,
    usage: Usage | None = None,
    bytes_out: int = 0,
    ttfb: float | None = None,
    metered: bool = True,
    reasons: tuple[str, ...] = (),
    upstream_message: str | None = None,
    listed: int | None = None,
) -> None:
    """End an admitted call: the one writer of a live call's ``request.completed``.

    ``metered`` calls (every forwarded call, and one refused by a record the log cannot
    hold) count in the outcome and latency metrics and record their size and timings; a
    model listing, or a call the log was down for, records only its status and outcome.
    ``upstream_status`` is the upstream's own status (a redirect, or the status an
    ``UPSTREAM_STATUS`` outcome is encoded with); ``upstream_message`` the shape of the
    message a 4xx caller was shown; ``listed`` the models a listing named."""
    spelled = encoded(outcome, upstream_status)
    cut = call.cut if metered else None
    usage_flags: tuple[str, ...] = ()
    duration_ms = 0.0
    if metered:
        state.outcomes[spelled] += 1
        now = time.perf_counter()
        duration = now - call.started
        duration_ms = round(duration * 1000, 3)
        state.latency.duration.observe(duration)
        if ttfb is not None:
            state.latency.ttfb.observe(ttfb)
        if call.forwarded is not None:
            state.latency.added.observe(call.forwarded - call.started)
            state.latency.upstream.observe(now - call.forwarded)
        if state.model_outcomes is not None and call.model is not None:
            state.model_outcomes[(call.model, spelled)] += 1
        if cut is not None:
            reasons = (cut.reason.value,)
        if usage is not None and usage.flags:
            usage_flags = tuple(sorted(usage.flags))
            reasons = (*reasons, Reason.UPSTREAM_USAGE_INVALID.value)
    payload = RequestCompleted(
        call=call.fields(),
        status=status,
        outcome=spelled,
        reasons=reasons,
        upstream_status=upstream_status,
        upstream_message=upstream_message,
        listed=listed,
        cut=cut is not None,
        lock_id=None if cut is None else cut.lock_id,
        usage_flags=usage_flags,
        metered=metered,
        tokens_in=usage.tokens_in if usage and metered else None,
        tokens_out=usage.output_tokens if usage and metered else None,
        bytes_out=bytes_out if metered else 0,
        duration_ms=duration_ms,
        ttfb_ms=None if ttfb is None or not metered else round(ttfb * 1000, 3),
    )
    record_later(state, call.event(payload, state.clock()))


def ended_elsewhere(
    call: UnfinishedCall, *, instance: str, recorded_by: str, at: float
) -> AuditEvent:
    """The ``request.completed`` of a call whose process died before it ended: written by
    the process that found its lease lapsed (``recorded_by``), from the call's
    ``request.allowed`` record."""
    # As the allowed record named them, read as they are (``CallFields.from_data`` would turn
    # a missing value into "": the record must say what the allowed one said).
    endpoint: Any = call.data.get("endpoint")
    payload = RequestCompleted(
        call=CallFields(endpoint, caller_address(call.data), call.data.get("org_id")),
        status=None,
        outcome=encoded(CallOutcome.PROCESS_ENDED),
        reasons=(Reason.PROCESS_ENDED.value,),
        instance=instance,
        recorded_by=recorded_by,
    )
    return AuditEvent(
        payload.NAME,
        at=at,
        actor="garrison",
        request_id=call.request_id,
        principal_id=call.principal_id,
        credential_id=call.credential_id,
        model=call.model,
        data=payload.as_data(),
        payload=payload,
    )


def upstream_error(
    state: GatewayState,
    call: Call,
    api: UpstreamApi,
    exc: GarrisonError,
    outcome: CallOutcome,
    *,
    upstream_status: int | None = None,
    upstream_message: str | None = None,
    reasons: tuple[str, ...] = (),
) -> web.Response:
    """End a call that failed before its answer started; the caller's error in its API's shape."""
    end_call(
        state,
        call,
        outcome,
        status=exc.status,
        upstream_status=upstream_status,
        upstream_message=upstream_message,
        reasons=reasons,
    )
    return error_response(api, exc, call.request_id)


def upstream_redirect(
    state: GatewayState, call: Call, api: UpstreamApi, status: int
) -> web.Response:
    """A 3xx from the upstream: not followed (its target is never contacted), a 502."""
    log.warning("upstream answered %d (redirect refused) for %s", status, call.request_id)
    return upstream_error(
        state,
        call,
        api,
        UpstreamFailed(f"upstream answered {status}"),
        CallOutcome.UPSTREAM_REDIRECT,
        upstream_status=status,
        reasons=(Reason.UPSTREAM_REDIRECT.value,),
    )
