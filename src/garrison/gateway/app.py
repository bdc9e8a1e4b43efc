"""The data plane: one handler per endpoint, running the request flow of DESIGN.md.

    client address → authenticate → read & parse body → model → decide
      → audit.append(request.allowed)  (durable: fail closed)
      → forward (stream through)       → audit.append_later(request.completed)

Refusals are recorded as ``request.denied`` with reason codes; the caller sees only the
generic error of its API. Nothing refused ever reaches the upstream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from garrison.admin_wire import ADMIN_PREFIX, admin_error_body
from garrison.domain import Reason, UpstreamApi
from garrison.domain.outcomes import CallOutcome
from garrison.edge.client_address import address_text
from garrison.errors import (
    AuditRecordInvalid,
    AuditUnavailable,
    BadRequest,
    GarrisonError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ShuttingDown,
    UnsupportedRoute,
)
from garrison.gateway import apis, tracing
from garrison.gateway.admission import admitted, decide, model_lock
from garrison.gateway.admission_limits import Refused
from garrison.gateway.apis import Endpoint
from garrison.gateway.call import Call, deny
from garrison.gateway.caller_text import caller_justification
from garrison.gateway.connections import reserve_refusal
from garrison.gateway.containment import stale_refusal, uncancel
from garrison.gateway.content import ContentUncheckable
from garrison.gateway.dpop_challenge import dpop_challenge
from garrison.gateway.edge import (  # noqa: F401 - re-exported
    STATE_KEY,
    error_response,
    new_request_id,
    peer_address,
    presented_key,
    read_body,
)
from garrison.gateway.forward import forward_any
from garrison.gateway.models_api import list_models, other_api, printable_name, retrieve_model
from garrison.gateway.outcome import cut_response, end_call
from garrison.gateway.shared_admission import admit_shared, shared_refusal
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import (
    traceparent,
)
from garrison.log_format import request_id_var

log = logging.getLogger("garrison.gateway")


# Whether this listener serves the admin API (else its paths are unsupported routes here).
SERVES_ADMIN_KEY: web.AppKey[bool] = web.AppKey("garrison_serves_admin", bool)


_JSON = "application/json"


# ── the model endpoints ────────────────────────────────────────────────────────────────────
def model_handler(endpoint: Endpoint) -> Any:
    api = endpoint.api

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        call = Call(endpoint.kind, new_request_id(), "")
        request_id_var.set(call.request_id)  # this task's log lines carry it
        if state.draining:
            # Stopping: finish what is in flight, take nothing new; the client reconnects.
            call.address = address_text(peer_address(request, state))
            refused = deny(state, call, api, ShuttingDown(), (Reason.SHUTTING_DOWN,))
            refused.force_close()
            return refused
        if state.inflight >= state.limits.max_concurrent_requests:
            call.address = address_text(peer_address(request, state))
            return deny(state, call, api, Overloaded(), (Reason.OVERLOADED,))
        state.inflight += 1
        state.calls += 1
        try:
            work = _handle_model_call(request, state, endpoint, call)
            trace = tracing.span_for  # None unless [tracing] is on: no cost when off
            return await (work if trace is None else trace(work, request, call, state))
        except asyncio.CancelledError:
            if call.cut is None:
                raise
            # Cut before the answer started (reading the body, waiting for the log).
            uncancel()
            return cut_response(state, call, api)
        finally:
            state.inflight -= 1
            state.live.discard(call)
            if call.ticket is not None:
                call.ticket.release()
            if call.lease is not None:
                call.lease.release()

    return handle


async def _handle_model_call(
    request: web.Request, state: GatewayState, endpoint: Endpoint, call: Call
) -> web.StreamResponse:
    api = endpoint.api
    now = state.clock()
    principal = admitted(request, state, call, api, now)
    if isinstance(principal, web.Response):
        return principal
    # Join the live calls right after the lock check (no await in between: see containment).
    # The loop kept on the state spares a getpid(); asked without it if that finds no task
    # (a state served on another loop), so a lock can always cut the call.
    call.task = asyncio.current_task(state.loop) or asyncio.current_task()
    state.live.add(call)
    try:
        # Before the model is looked up: the same refusal whatever model was asked for.
        justification = caller_justification(request.headers)
    except BadRequest as exc:
        return deny(state, call, api, exc, (Reason.BODY_MALFORMED,))
    try:
        assert call.credential_id is not None
        call.ticket = state.admission.enter(state.limits, call.credential_id, principal.id)
        refused = await admit_shared(state, call, api, principal.id)
        if refused is not None:
            return refused
        raw = await read_body(request, state, ticket=call.ticket)
    except Refused as over:
        return deny(state, call, api, over.error, (over.reason,))
    except PayloadTooLarge as exc:
        return deny(state, call, api, exc, (Reason.BODY_TOO_LARGE,))
    except RequestTimeout as exc:
        return deny(state, call, api, exc, (Reason.BODY_TIMEOUT,))
    call.body_sha256 = await state.bodies.digest(raw)
    call.body_bytes = len(raw)
    try:
        # Large bodies are parsed (and scanned) in a worker process: see body_work.
        seen = await state.bodies.inspect(endpoint, raw, state.content_rules)
    except BadRequest as exc:
        return deny(state, call, api, exc, (Reason.BODY_MALFORMED,))
    except Overloaded as exc:  # the body worker died (a new one is starting)
        return deny(state, call, api, exc, (Reason.OVERLOADED,))
    name = seen.model
    model = state.snapshot.models.get(name)
    if model is None:
        call.model = printable_name(name)
        return deny(state, call, api, NotFound(), (Reason.MODEL_UNKNOWN,))
    call.model = model.name
    if model.api is not api:
        return other_api(state, principal, model, call, api, now)
    call.justified = bool(justification)
    decision = decide(state, principal, model, call, now, justification=call.justified)
    if not decision.allowed:
        # 404, not 403: a model the caller may not use is indistinguishable from none at all.
        return deny(state, call, api, NotFound(), decision.reasons, policies=decision.policies)
    call.model_id = model.id
    refused = model_lock(state, call, api, state.clock())
    if refused is not None:
        return refused
    if stale_refusal(state, model):
        return deny(state, call, api, Overloaded(), (Reason.LOCK_VIEW_STALE,))
    if call.shared_down and (refused := shared_refusal(state, call, api, model)) is not None:
        return refused
    try:
        built = await state.bodies.rebuild(endpoint, raw, seen, model)
    except Overloaded as exc:
        return deny(state, call, api, exc, (Reason.OVERLOADED,))
    payload, injected_usage = built.payload, built.injected_usage
    stream = seen.stream
    flags: list[str] = []
    if state.content_rules:
        try:
            flags = state.bodies.flags(state.content_rules, seen, endpoint.kind)
        except ContentUncheckable as exc:
            # Refused, never forwarded half-read (after the decision: it reveals nothing).
            return deny(state, call, api, exc, (Reason.BODY_MALFORMED,))
    dropped = built.dropped
    allowed = call.allowed_event(
        now,
        reasons=tuple([r.value for r in decision.reasons]),
        policies=tuple(decision.policies),
        stream=stream,
        upstream_model=model.upstream_model,
        level=model.level.label,
        justification=justification or None,
        traceparent=traceparent(request.headers),
        dropped_fields=tuple(dropped.names),
        dropped_fields_count=dropped.count,
        content_flags=tuple(flags),
    )
    if state.capture is not None:
        allowed = dataclasses.replace(allowed, capture=state.capture.seal_bytes(raw))
    call.allowed = True
    try:
        await state.audit.append(allowed)
    except AuditRecordInvalid as exc:
        # This event alone cannot be recorded (never forwarded, even when failing open).
        log.error("refusing %s: %s", call.request_id, exc.detail)
        end_call(state, call, CallOutcome.AUDIT_RECORD_INVALID, status=500)
        return error_response(api, exc, call.request_id)
    except AuditUnavailable as exc:
        if state.audit_fail_open:
            log.error(
                "AUDIT FAIL-OPEN: forwarding %s without a durable record: %s",
                call.request_id,
                exc.detail,
            )
            return await forward_any(
                request, state, endpoint, model, call, payload, injected_usage, stream
            )
        log.error("refusing %s: %s", call.request_id, exc.detail)
        # Best effort: if the log recovers, it records why this call was refused.
        end_call(state, call, CallOutcome.AUDIT_UNAVAILABLE, status=503, metered=False)
        return error_response(api, AuditUnavailable(), call.request_id)
    if call.cut is not None:
        # Cut while it waited (a library awaited on the way may swallow the cancellation):
        # the last gate before the upstream, so a lock that covered it is never bypassed.
        return cut_response(state, call, api)
    return await forward_any(request, state, endpoint, model, call, payload, injected_usage, stream)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


async def readyz(request: web.Request) -> web.Response:
    # Public (load balancers probe it without a key): it says ready or not, and one coarse
    # reason, nothing about the deployment (see docs/security.md, "The admin API surface").
    state = request.app[STATE_KEY]
    if state.snapshot.version <= 0:
        answer = {"status": "not_ready", "reason": "starting"}
    elif not state.audit.healthy:
        answer = {"status": "not_ready", "reason": "audit_unavailable"}
    elif state.draining:
        # A stopping process leaves the load balancer's pool before it stops answering.
        answer = {"status": "not_ready", "reason": "stopping"}
    elif state.disk_low:
        # Free space under the named minimum: the log is about to stop (see runtime).
        answer = {"status": "not_ready", "reason": "disk_low"}
    else:
        answer = {"status": "ready"}
    return web.Response(
        status=200 if answer["status"] == "ready" else 503,
        body=orjson.dumps(answer),
        content_type=_JSON,
        headers={"cache-control": "no-store"},
    )


async def not_found(request: web.Request) -> web.Response:
    exc = UnsupportedRoute()
    api = UpstreamApi.ANTHROPIC if "anthropic-version" in request.headers else UpstreamApi.OPENAI
    return web.Response(status=404, body=apis.error_body(api, exc), content_type=_JSON)


def build_app(
    state: GatewayState,
    admin: Callable[[web.Application], None] | None = None,
    *,
    data_routes: bool = True,
) -> web.Application:
    """The data plane (``data_routes``) and/or the admin API on one listener: ``admin``
    adds its routes (the composition root passes the admin plane's ``add_admin_routes``;
    this plane never imports that one). A listener without the admin API answers its paths
    as unsupported routes."""
    # client_max_size is a backstop only; read_body enforces the limit with a clean 413.
    app = web.Application(
        client_max_size=state.limits.max_body_bytes + 1,
        middlewares=[error_middleware],
    )
    app[STATE_KEY] = state
    app[SERVES_ADMIN_KEY] = admin is not None
    app.on_startup.append(_remember_loop)
    app.on_response_prepare.append(_server_header)
    app.on_response_prepare.append(dpop_challenge)  # 401s of DPoP-bound calls
    if data_routes:
        for endpoint in apis.ENDPOINTS:
            app.router.add_post(endpoint.path, model_handler(endpoint))
        app.router.add_get("/v1/models", list_models)
        app.router.add_get("/v1/models/{model_id:.+}", retrieve_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if admin is not None:
        admin(app)
    return app


async def _remember_loop(app: web.Application) -> None:
    # Run in the loop that serves the app, before its first request.
    app[STATE_KEY].loop = asyncio.get_running_loop()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp announces "Python/3.11 aiohttp/x.y"; callers learn nothing about our stack.
    response.headers["Server"] = "garrison"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The only middleware (each one is a coroutine frame on every request): first the
    connection reserve (``connections.reserve_refusal``), then anything unexpected becomes
    a clean error in the API's shape, never a trace."""
    try:
        refused = reserve_refusal(request)
        if refused is not None:
            return refused
        return await handler(request)
    except web.HTTPNotFound:
        if _admin_path(request):
            exc404 = NotFound(public_message="Unknown admin endpoint.")
            return web.Response(status=404, body=admin_error_body(exc404), content_type=_JSON)
        return await not_found(request)
    except web.HTTPMethodNotAllowed as refused_method:
        exc405 = BadRequest(public_message="Method not allowed.")
        allow = ", ".join(sorted(refused_method.allowed_methods))
        return web.Response(
            status=405,
            body=_error_body(request, exc405),
            content_type=_JSON,
            headers={"Allow": allow},
        )
    except web.HTTPException:
        raise
    except GarrisonError as exc:
        return web.Response(status=exc.status, body=_error_body(request, exc), content_type=_JSON)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error on %s", request.path)
        return web.Response(
            status=500, body=_error_body(request, GarrisonError()), content_type=_JSON
        )


def _admin_path(request: web.Request) -> bool:
    return request.path.startswith(ADMIN_PREFIX + "/") and request.app[SERVES_ADMIN_KEY]


def _error_body(request: web.Request, exc: GarrisonError) -> bytes:
    """An error in the shape of the API the path belongs to (worked out only on an error)."""
    if _admin_path(request):
        return admin_error_body(exc)
    api = UpstreamApi.ANTHROPIC if request.path == "/v1/messages" else UpstreamApi.OPENAI
    return apis.error_body(api, exc)


__all__ = ["STATE_KEY", "build_app", "new_request_id"]
