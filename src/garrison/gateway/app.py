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
import functools
import ipaddress
import itertools
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from garrison.admin.shape import ADMIN_PREFIX, admin_error_body
from garrison.audit import AuditEvent, EventName
from garrison.domain import Model, Principal, Reason, UpstreamApi
from garrison.errors import (
    AuditRecordInvalid,
    AuditUnavailable,
    BadRequest,
    Forbidden,
    GarrisonError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ShuttingDown,
    Unauthenticated,
    UnsupportedRoute,
    UpstreamFailed,
    UpstreamTimeout,
)
from garrison.gateway import apis, listing, tracing
from garrison.gateway.admission_limits import Refused, Ticket
from garrison.gateway.answers import (
    CallDeadline,
    Charge,
    ResponseBudgetExhausted,
    answer_usage,
    read_answer,
    renamed_length,
    write_renamed,
)
from garrison.gateway.apis import Endpoint
from garrison.gateway.caller_text import caller_justification
from garrison.gateway.client_address import client_address, parse_address
from garrison.gateway.connections import reserve_middleware
from garrison.gateway.containment import Cut, stale_refusal, uncancel
from garrison.gateway.content import ContentUncheckable
from garrison.gateway.credential_echo import model_answer_forms, model_key, scrub_bytes
from garrison.gateway.limits import MAX_UPSTREAM_ERROR_BYTES
from garrison.gateway.metering import SseMeter, Usage
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import (
    REQUEST_ID_HEADER,
    is_encoded,
    is_redirect,
    traceparent,
    upstream_headers,
    upstream_url,
)
from garrison.gateway.upstream_errors import client_message, rewrite_stream_errors
from garrison.identity import authenticate
from garrison.identity.access_tokens import SessionClaims
from garrison.identity.token_auth import DPOP_HEADER, authenticate_token, dpop_token
from garrison.log_format import request_id_var
from garrison.policy.context import call_context
from garrison.policy.engine import PolicyDecision

if TYPE_CHECKING:
    from garrison.admin.api import AdminBackend

log = logging.getLogger("garrison.gateway")

STATE_KEY: web.AppKey[GatewayState] = web.AppKey("garrison_state", GatewayState)
# Whether this listener serves the admin API (else its paths are unsupported routes here).
SERVES_ADMIN_KEY: web.AppKey[bool] = web.AppKey("garrison_serves_admin", bool)
_JSON = "application/json"
# Stands in when the peer address cannot be read (never matches a key's networks list).
_UNKNOWN_ADDRESS = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 - a value, not a bind


class _RequestIds:
    """UUID-shaped request ids (llama-cpp-python refuses any other form): 64 random bits per
    process, then a counter. Unique across processes and restarts, and no system call per
    request (``os.urandom`` per call cost 3.6 % of the event loop and handed the GIL to the
    audit thread mid-request). Request ids are labels, not secrets."""

    def __init__(self) -> None:
        self._prefix = int.from_bytes(os.urandom(8), "big")
        self._counter = itertools.count()

    def __call__(self) -> str:
        value = (self._prefix << 64) | (next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF)
        return str(uuid.UUID(int=value, version=4))

    @property
    def prefix(self) -> str:
        """What every id of this process starts with (``xxxxxxxx-xxxx-4xxx``): the process's
        instance id, by which its calls are found after it dies."""
        return str(uuid.UUID(int=self._prefix << 64, version=4))[:18]


new_request_id = _RequestIds()

NO_ENGINE = PolicyDecision(False, (Reason.POLICY_ERROR,), (), ("no policy engine loaded",))


class Call:
    """Everything known about one call, for its audit events."""

    __slots__ = (
        "address",
        "allowed",
        "body_bytes",
        "body_sha256",
        "credential_id",
        "cut",
        "endpoint",
        "forwarded",
        "justified",
        "model",
        "model_id",
        "org_id",
        "peer",
        "presented_key_id",
        "principal_id",
        "request_id",
        "session",
        "started",
        "task",
        "ticket",
    )

    def __init__(self, endpoint: str, request_id: str, address: str) -> None:
        self.endpoint = endpoint
        self.request_id = request_id
        self.address = address
        self.started = time.perf_counter()
        self.forwarded: float | None = None  # when the upstream request was sent
        self.principal_id: str | None = None
        self.credential_id: str | None = None
        # The sign-in token's claims when the call came with one (credential_id is then its
        # session id, which locks and limits treat as a key id).
        self.session: SessionClaims | None = None
        self.org_id: str | None = None
        self.model: str | None = None
        self.body_sha256: str | None = None
        self.body_bytes: int | None = None
        # The public id of a key that did not authenticate (unknown id, wrong secret): not a
        # secret, and what a detector needs to see someone guessing at one key.
        self.presented_key_id: str | None = None
        self.model_id: str | None = None
        self.peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        # Set when a lock (or a revocation) cuts this call in flight; its task is cancelled.
        self.cut: Cut | None = None
        self.task: asyncio.Task[Any] | None = None
        # The request.allowed event was handed to the log (what a cut then records).
        self.allowed = False
        # The per-credential/principal slots and body bytes this call holds (admission_limits).
        self.ticket: Ticket | None = None
        # The call came with a justification (a re-decision in flight keeps it).
        self.justified = False

    def event(self, name: EventName, at: float, **data: Any) -> AuditEvent:
        data["endpoint"] = self.endpoint
        data["client_address"] = self.address
        data["org_id"] = self.org_id
        if self.presented_key_id is not None:
            data["presented_key_id"] = self.presented_key_id
        if self.body_sha256 is not None:
            data["body_sha256"] = self.body_sha256
            data["body_bytes"] = self.body_bytes
        return AuditEvent(
            name,
            at=at,
            actor=self.principal_id,
            request_id=self.request_id,
            principal_id=self.principal_id,
            credential_id=self.credential_id,
            model=self.model,
            data=data,
        )


# ── helpers ────────────────────────────────────────────────────────────────────────────────
def _error_response(api: UpstreamApi, exc: GarrisonError, request_id: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id}
    if exc.status == 401 and api is UpstreamApi.OPENAI:
        headers["www-authenticate"] = 'Bearer realm="garrison"'
    return web.Response(
        status=exc.status, body=apis.error_body(api, exc), content_type=_JSON, headers=headers
    )


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return ""
    return request.headers.get("x-api-key")


def peer_address(
    request: web.Request, state: GatewayState
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    peer = None
    transport = request.transport
    if transport is not None:
        info = transport.get_extra_info("peername")
        if isinstance(info, tuple) and info:
            peer = parse_address(str(info[0]))
    if peer is None:
        return _UNKNOWN_ADDRESS
    if not state.trusted_proxies:
        return peer
    lines = request.headers.getall(state.forwarded_header, ())
    return client_address(peer, lines, state.trusted_proxies, state.forwarded_header)


def _record_later(state: GatewayState, event: AuditEvent) -> None:
    try:
        state.audit.append_later(event)
    except (AuditUnavailable, AuditRecordInvalid) as exc:
        log.error("audit refused %s for %s: %s", event.name, event.request_id, exc.detail)


def _deny(
    state: GatewayState,
    call: Call,
    api: UpstreamApi,
    exc: GarrisonError,
    reasons: tuple[Reason, ...],
    *,
    policies: tuple[str, ...] = (),
) -> web.Response:
    extra = {"policies": list(policies)} if policies else {}
    for reason in reasons:
        state.refusals[reason.value] += 1
    _record_later(
        state,
        call.event(
            EventName.REQUEST_DENIED,
            state.clock(),
            status=exc.status,
            reasons=[r.value for r in reasons],
            **extra,
        ),
    )
    return _error_response(api, exc, call.request_id)


def _authenticated(
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


def _locked(
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
    _record_later(
        state,
        call.event(
            EventName.REQUEST_DENIED,
            state.clock(),
            status=403,
            reasons=[Reason.LOCKED.value],
            lock_id=lock.id,
        ),
    )
    return _error_response(api, Forbidden(), call.request_id)


def _cut_as(call: Call) -> tuple[str, GarrisonError]:
    """The outcome and the client's error for a cut call: a lock or a withdrawn standing
    (403), or the process stopping past its drain deadline (503: retry elsewhere)."""
    assert call.cut is not None
    if call.cut.reason is Reason.SHUTTING_DOWN:
        return "shutdown", ShuttingDown()
    return "cut", Forbidden()


def _cut_response(state: GatewayState, call: Call, api: UpstreamApi) -> web.Response:
    """The answer to a call cut before its response started."""
    assert call.cut is not None
    outcome, error = _cut_as(call)
    if call.allowed:
        _complete(
            state, call, status=error.status, outcome=outcome, usage=None, bytes_out=0, ttfb=None
        )
    else:
        _record_later(
            state,
            call.event(
                EventName.REQUEST_DENIED,
                state.clock(),
                status=error.status,
                reasons=[call.cut.reason.value],
                lock_id=call.cut.lock_id,
            ),
        )
    return _error_response(api, error, call.request_id)


async def read_body(
    request: web.Request,
    state: GatewayState,
    limit: int | None = None,
    ticket: Ticket | None = None,
) -> bytes:
    """The body, within ``limit`` and the body-read deadline; with a ``ticket``, its bytes
    are charged to the buffered-body budget before they are held (``Refused`` if over)."""
    limit = state.limits.max_body_bytes if limit is None else limit
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"declared {declared} bytes")
    if ticket is not None and declared is not None:
        ticket.charge(declared)
    content = request.content
    if content.is_eof():
        # The whole body came with the head (the usual case): no timer needed.
        raw = content.read_nowait(-1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        if ticket is not None and declared is None:
            ticket.charge(len(raw))
        return raw
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(state.limits.body_read_timeout_s):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body over {limit} bytes")
                if ticket is not None and declared is None:
                    ticket.charge(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout("body read timeout") from None
    return b"".join(chunks)


# ── the model endpoints ────────────────────────────────────────────────────────────────────
def model_handler(endpoint: Endpoint) -> Any:
    api = endpoint.api

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        call = Call(endpoint.kind, new_request_id(), "")
        request_id_var.set(call.request_id)  # this task's log lines carry it
        if state.draining:
            # Stopping: finish what is in flight, take nothing new; the client reconnects.
            call.address = str(peer_address(request, state))
            refused = _deny(state, call, api, ShuttingDown(), (Reason.SHUTTING_DOWN,))
            refused.force_close()
            return refused
        if state.inflight >= state.limits.max_concurrent_requests:
            call.address = str(peer_address(request, state))
            return _deny(state, call, api, Overloaded(), (Reason.OVERLOADED,))
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
            return _cut_response(state, call, api)
        finally:
            state.inflight -= 1
            state.live.discard(call)
            if call.ticket is not None:
                call.ticket.release()

    return handle


async def _handle_model_call(
    request: web.Request, state: GatewayState, endpoint: Endpoint, call: Call
) -> web.StreamResponse:
    api = endpoint.api
    now = state.clock()
    principal, reason = _authenticated(request, state, call, now)
    if principal is None:
        assert reason is not None
        return _deny(state, call, api, Unauthenticated(), (reason,))
    # Join the live calls before checking locks (no await in between: see containment).
    call.task = asyncio.current_task()
    state.live.add(call)
    refused = _locked(state, call, api, now)
    if refused is not None:
        return refused
    try:
        # Before the model is looked up: the same refusal whatever model was asked for.
        justification = caller_justification(request.headers)
    except BadRequest as exc:
        return _deny(state, call, api, exc, (Reason.BODY_MALFORMED,))
    try:
        assert call.credential_id is not None
        call.ticket = state.admission.enter(state.limits, call.credential_id, principal.id)
        raw = await read_body(request, state, ticket=call.ticket)
    except Refused as over:
        return _deny(state, call, api, over.error, (over.reason,))
    except PayloadTooLarge as exc:
        return _deny(state, call, api, exc, (Reason.BODY_TOO_LARGE,))
    except RequestTimeout as exc:
        return _deny(state, call, api, exc, (Reason.BODY_TIMEOUT,))
    call.body_sha256 = await state.bodies.digest(raw)
    call.body_bytes = len(raw)
    try:
        # Large bodies are parsed (and scanned) in a worker process: see body_work.
        seen = await state.bodies.inspect(endpoint, raw, state.content_rules)
    except BadRequest as exc:
        return _deny(state, call, api, exc, (Reason.BODY_MALFORMED,))
    except Overloaded as exc:  # the body worker died (a new one is starting)
        return _deny(state, call, api, exc, (Reason.OVERLOADED,))
    name = seen.model
    model = state.snapshot.models.get(name)
    if model is None:
        call.model = _printable_name(name)
        return _deny(state, call, api, NotFound(), (Reason.MODEL_UNKNOWN,))
    call.model = model.name
    if model.api is not api:
        return _other_api(state, principal, model, call, api, now)
    call.justified = bool(justification)
    decision = _decide(state, principal, model, call, now, justification=call.justified)
    if not decision.allowed:
        # 404, not 403: a model the caller may not use is indistinguishable from none at all.
        return _deny(state, call, api, NotFound(), decision.reasons, policies=decision.policies)
    call.model_id = model.id
    refused = _locked(state, call, api, state.clock(), model_only=True)
    if refused is not None:
        return refused
    if stale_refusal(state, model):
        return _deny(state, call, api, Overloaded(), (Reason.LOCK_VIEW_STALE,))
    try:
        built = await state.bodies.rebuild(endpoint, raw, seen, model)
    except Overloaded as exc:
        return _deny(state, call, api, exc, (Reason.OVERLOADED,))
    payload, injected_usage = built.payload, built.injected_usage
    stream = seen.stream
    extra_data: dict[str, Any] = {"justification": justification} if justification else {}
    trace = traceparent(request.headers)
    if trace is not None:
        extra_data["traceparent"] = trace
    extra_data.update(built.dropped.record())
    if state.content_rules:
        try:
            flags = state.bodies.flags(state.content_rules, seen, endpoint.kind)
        except ContentUncheckable as exc:
            # Refused, never forwarded half-read (after the decision: it reveals nothing).
            return _deny(state, call, api, exc, (Reason.BODY_MALFORMED,))
        if flags:
            extra_data["content_flags"] = flags
    allowed = call.event(
        EventName.REQUEST_ALLOWED,
        now,
        reasons=[r.value for r in decision.reasons],
        policies=list(decision.policies),
        stream=stream,
        upstream_model=model.upstream_model,
        level=model.level.label,
        **extra_data,
    )
    if state.capture is not None:
        allowed = dataclasses.replace(allowed, capture=state.capture.seal_bytes(raw))
    call.allowed = True
    try:
        await state.audit.append(allowed)
    except AuditRecordInvalid as exc:
        # This event alone cannot be recorded (never forwarded, even when failing open).
        log.error("refusing %s: %s", call.request_id, exc.detail)
        _complete(
            state,
            call,
            status=500,
            outcome="audit_record_invalid",
            usage=None,
            bytes_out=0,
            ttfb=None,
        )
        return _error_response(api, exc, call.request_id)
    except AuditUnavailable as exc:
        if state.audit_fail_open:
            log.error(
                "AUDIT FAIL-OPEN: forwarding %s without a durable record: %s",
                call.request_id,
                exc.detail,
            )
            return await _forward_any(
                request, state, endpoint, model, call, payload, injected_usage, stream
            )
        log.error("refusing %s: %s", call.request_id, exc.detail)
        # Best effort: if the log recovers, it records why this call was refused.
        _record_later(
            state,
            call.event(
                EventName.REQUEST_COMPLETED, state.clock(), status=503, outcome="audit_unavailable"
            ),
        )
        return _error_response(api, AuditUnavailable(), call.request_id)
    return await _forward_any(
        request, state, endpoint, model, call, payload, injected_usage, stream
    )


async def _forward_any(
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
        return await _forward_stream(request, state, endpoint, model, call, payload, injected_usage)
    charge = Charge(state.answers, state.limits)
    try:
        return await _forward(request, state, endpoint, model, call, payload, charge)
    finally:
        charge.release()


def _timeout(state: GatewayState) -> aiohttp.ClientTimeout:
    limits = state.limits
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=limits.upstream_connect_timeout_s,
        sock_read=limits.upstream_read_timeout_s,
    )


async def _read_all(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole upstream body, or ``UpstreamFailed`` once it passes ``limit`` bytes.

    (``StreamReader.read(n)`` returns what is buffered, not n bytes: loop to the end.)"""
    if resp.content_length is not None and resp.content_length > limit:
        raise UpstreamFailed("upstream answer over the size limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamFailed("upstream answer over the size limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _upstream_failure(
    resp: aiohttp.ClientResponse, model: Model
) -> tuple[GarrisonError, dict[str, Any] | None]:
    """The caller's error for an upstream 4xx/5xx, and for a 4xx the audit field naming the
    message shape the caller was shown (``generic``: the status's own message)."""
    try:
        raw = await _read_all(resp, MAX_UPSTREAM_ERROR_BYTES)
    except UpstreamFailed:
        raw = b""
    if 400 <= resp.status < 500:
        message, shape = client_message(
            raw, upstream_model=model.upstream_model, model_name=model.name, key=model_key(model)
        )
        exc = apis.error_for_upstream_status(resp.status, message)
        return exc, {"upstream_message": shape}
    return UpstreamFailed(f"upstream answered {resp.status}"), None


def _complete(
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
    _record_later(
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


def _client_model_bytes(model: Model) -> tuple[bytes, bytes]:
    return _quoted(model.upstream_model), _quoted(model.name)


@functools.lru_cache(maxsize=1024)
def _quoted(name: str) -> bytes:
    """A model name as JSON (cached: the same few names on every call)."""
    return orjson.dumps(name)


async def _forward(
    request: web.Request,
    state: GatewayState,
    endpoint: Endpoint,
    model: Model,
    call: Call,
    payload: bytes,
    charge: Charge,
) -> web.StreamResponse:
    api = endpoint.api
    assert state.session is not None
    headers = upstream_headers(endpoint, model, call.request_id, request.headers)
    loop = asyncio.get_running_loop()
    # The whole call, connect to last byte (answers.py): a dripping upstream cannot stretch it.
    deadline = loop.time() + state.limits.nonstream_max_seconds
    call.forwarded = time.perf_counter()
    try:
        async with (
            asyncio.timeout_at(deadline),
            state.session.post(
                upstream_url(model, endpoint),
                data=payload,
                headers=headers,
                timeout=_timeout(state),
                allow_redirects=False,  # never: see upstream.is_redirect
                ssl=state.upstream_tls.for_model(model),
            ) as resp,
        ):
            if is_redirect(resp.status):
                return _upstream_redirect(state, call, api, resp.status)
            if is_encoded(resp.headers):
                raise UpstreamFailed("upstream answer compressed")
            if resp.status >= 400:
                exc, shape = await _upstream_failure(resp, model)
                _complete(
                    state,
                    call,
                    status=exc.status,
                    outcome=f"upstream_{resp.status}",
                    usage=None,
                    bytes_out=0,
                    ttfb=None,
                    extra=shape,
                )
                return _error_response(api, exc, call.request_id)
            raw = await read_answer(resp, state.limits.max_response_bytes, charge)
    except asyncio.CancelledError:
        if call.cut is not None:
            # Cut by a lock: leaving the upstream context above dropped its connection.
            uncancel()
            return _cut_response(state, call, api)
        _complete(
            state, call, status=499, outcome="client_closed", usage=None, bytes_out=0, ttfb=None
        )
        raise
    except ResponseBudgetExhausted as exc:
        log.warning("answer for %s dropped: %s", call.request_id, exc.detail)
        return _upstream_error(state, call, api, exc, "response_budget")
    except (TimeoutError, aiohttp.ServerTimeoutError):
        if loop.time() >= deadline:
            return _upstream_error(state, call, api, CallDeadline(), "call_deadline")
        return _upstream_error(state, call, api, UpstreamTimeout(), "upstream_timeout")
    except (aiohttp.ClientError, UpstreamFailed) as exc:
        log.warning("upstream failure for %s: %s", call.request_id, type(exc).__name__)
        return _upstream_error(state, call, api, UpstreamFailed(), "upstream_error")
    try:
        usage = answer_usage(api, raw)
    except orjson.JSONDecodeError:
        return _upstream_error(state, call, api, UpstreamFailed(), "upstream_bad_json")
    old, new = _client_model_bytes(model)
    # The model's own credential never reaches the caller (a copy only when it is there).
    raw = scrub_bytes(raw, model_answer_forms(model))
    # Our own content type: the upstream's header is its text (it can carry the credential).
    response = web.StreamResponse(
        headers={"content-type": _JSON, REQUEST_ID_HEADER: call.request_id}
    )
    response.content_length = renamed_length(raw, old, new)
    _complete(
        state,
        call,
        status=200,
        outcome="ok",
        usage=usage,
        bytes_out=response.content_length,
        ttfb=time.perf_counter() - call.started,
    )
    # Written here, renamed piece by piece, so the budget holds the answer until it is sent.
    await response.prepare(request)
    await write_renamed(response, raw, old, new)
    await response.write_eof()
    return response


def _upstream_error(
    state: GatewayState,
    call: Call,
    api: UpstreamApi,
    exc: GarrisonError,
    outcome: str,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    _complete(
        state,
        call,
        status=exc.status,
        outcome=outcome,
        usage=None,
        bytes_out=0,
        ttfb=None,
        extra=extra,
    )
    return _error_response(api, exc, call.request_id)


def _upstream_redirect(
    state: GatewayState, call: Call, api: UpstreamApi, status: int
) -> web.Response:
    """A 3xx from the upstream: not followed (its target is never contacted), a 502."""
    log.warning("upstream answered %d (redirect refused) for %s", status, call.request_id)
    exc = UpstreamFailed(f"upstream answered {status}")
    _complete(
        state,
        call,
        status=exc.status,
        outcome="upstream_redirect",
        usage=None,
        bytes_out=0,
        ttfb=None,
        extra={"reasons": [Reason.UPSTREAM_REDIRECT.value], "upstream_status": status},
    )
    return _error_response(api, exc, call.request_id)


class _StreamLimit(Exception):
    """The stream ran past its longest duration."""


async def _forward_stream(
    request: web.Request,
    state: GatewayState,
    endpoint: Endpoint,
    model: Model,
    call: Call,
    payload: bytes,
    injected_usage: bool,
) -> web.StreamResponse:
    api = endpoint.api
    assert state.session is not None
    headers = upstream_headers(endpoint, model, call.request_id, request.headers)
    meter = SseMeter(api, drop_usage_chunk=injected_usage)
    old, new = _client_model_bytes(model)
    rename = old != new
    echo_forms = model_answer_forms(model)
    response: web.StreamResponse | None = None
    bytes_out = 0
    ttfb: float | None = None
    outcome = "ok"
    status = 200
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.limits.stream_max_seconds
    call.forwarded = time.perf_counter()
    try:
        async with state.session.post(
            upstream_url(model, endpoint),
            data=payload,
            headers=headers,
            timeout=_timeout(state),
            allow_redirects=False,  # never: see upstream.is_redirect
            ssl=state.upstream_tls.for_model(model),
        ) as resp:
            if is_redirect(resp.status):
                return _upstream_redirect(state, call, api, resp.status)
            if is_encoded(resp.headers):
                raise UpstreamFailed("upstream answer compressed")
            if resp.status >= 400:
                exc, shape = await _upstream_failure(resp, model)
                return _upstream_error(state, call, api, exc, f"upstream_{resp.status}", shape)
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
                        out = meter.feed(data)
                        if meter.overflow:
                            raise UpstreamFailed("SSE event over the size limit")
                        if not out:
                            continue
                        if ttfb is None:
                            ttfb = time.perf_counter() - call.started
                        if rename:
                            out = out.replace(old, new)
                        if echo_forms:
                            out = scrub_bytes(out, echo_forms)
                        out = rewrite_stream_errors(
                            out,
                            api,
                            upstream_model=model.upstream_model,
                            model_name=model.name,
                            key=model_key(model),
                        )
                        bytes_out += len(out)
                        await response.write(out)
            except TimeoutError:
                if loop.time() >= deadline:
                    raise _StreamLimit from None
                raise
            rest = rewrite_stream_errors(
                scrub_bytes(meter.flush(), echo_forms),
                api,
                upstream_model=model.upstream_model,
                model_name=model.name,
                key=model_key(model),
            )
            if rest:
                bytes_out += len(rest)
                await response.write(rest)
    except asyncio.CancelledError:
        if call.cut is None:
            _complete(
                state,
                call,
                status=499,
                outcome="client_closed",
                usage=meter.usage,
                bytes_out=bytes_out,
                ttfb=ttfb,
            )
            raise
        # Cut by a lock: the upstream connection was dropped on the way out of its context;
        # the client gets a final error event (or a plain 403 if nothing was sent yet).
        uncancel()
        if response is None:
            return _cut_response(state, call, api)
        outcome, cut_error = _cut_as(call)
        status = cut_error.status
        await _end_stream(response, api, cut_error)
    except _StreamLimit:
        outcome, status = "stream_limit", 504
        error: GarrisonError = UpstreamTimeout(
            public_message="The stream exceeded its longest duration."
        )
        await _end_stream(response, api, error)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        outcome, status = "upstream_timeout", 504
        if response is None:
            return _upstream_error(state, call, api, UpstreamTimeout(), outcome)
        await _end_stream(response, api, UpstreamTimeout())
    except (aiohttp.ClientError, UpstreamFailed) as exc:
        log.warning("upstream failure for %s: %s", call.request_id, type(exc).__name__)
        outcome, status = "upstream_error", 502
        if response is None:
            return _upstream_error(state, call, api, UpstreamFailed(), outcome)
        await _end_stream(response, api, UpstreamFailed())
    except ConnectionResetError:
        outcome, status = "client_closed", 499
    _complete(
        state,
        call,
        status=status,
        outcome=outcome,
        usage=meter.usage,
        bytes_out=bytes_out,
        ttfb=ttfb,
    )
    assert response is not None
    return response


async def _end_stream(
    response: web.StreamResponse | None, api: UpstreamApi, exc: GarrisonError
) -> None:
    if response is None:
        return
    try:
        await response.write(apis.stream_error_event(api, exc))
        await response.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass


# ── models list, health ────────────────────────────────────────────────────────────────────
def _decide(
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


def _visible_models(principal: Principal, state: GatewayState, call: Call) -> list[Model]:
    now = state.clock()
    return sorted(
        (
            m
            for m in state.snapshot.models.values()
            if _decide(state, principal, m, call, now, justification=True).allowed
        ),
        key=lambda m: m.name,
    )


def _model_locked(state: GatewayState, model: Model, now: float) -> bool:
    locks = state.snapshot.locks
    return bool(locks) and locks.covering(now, model_id=model.id, include_global=False) is not None


def _printable_name(name: str) -> str:
    """A caller-chosen model name as kept for the record: printable, at most 200 characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in name[:200])


def _hidden(
    state: GatewayState, principal: Principal, model: Model, call: Call, now: float
) -> tuple[Reason, ...]:
    """Why ``model`` is hidden from this caller (``()``: visible). Visible is what
    ``/v1/models`` lists: allowed (a justification assumed given) and not locked."""
    decision = _decide(state, principal, model, call, now, justification=True)
    if not decision.allowed:
        return decision.reasons
    return (Reason.LOCKED,) if _model_locked(state, model, now) else ()


def _other_api(
    state: GatewayState,
    principal: Principal,
    model: Model,
    call: Call,
    api: UpstreamApi,
    now: float,
) -> web.Response:
    """A model called through the API it does not speak: a caller who may use it is told
    which API it speaks; anyone else gets exactly the answer for a model that does not exist."""
    hidden = _hidden(state, principal, model, call, now)
    if hidden:
        return _deny(state, call, api, NotFound(), hidden)
    return _deny(state, call, api, listing.wrong_api(model), (Reason.MODEL_WRONG_API,))


async def list_models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    anthropic = "anthropic-version" in request.headers
    api = UpstreamApi.ANTHROPIC if anthropic else UpstreamApi.OPENAI
    call = Call("models", new_request_id(), "")
    now = state.clock()
    principal, reason = _authenticated(request, state, call, now)
    if principal is None:
        assert reason is not None
        return _deny(state, call, api, Unauthenticated(), (reason,))
    refused = _locked(state, call, api, now)
    if refused is not None:
        return refused
    models = [
        m for m in _visible_models(principal, state, call) if not _model_locked(state, m, now)
    ]
    data = listing.models_list(api, models)
    _record_later(
        state,
        call.event(EventName.REQUEST_COMPLETED, now, status=200, outcome="ok", listed=len(models)),
    )
    return web.Response(
        body=orjson.dumps(data), content_type=_JSON, headers={REQUEST_ID_HEADER: call.request_id}
    )


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{id}``: a model the caller may see, or the 404 of a missing one."""
    state = request.app[STATE_KEY]
    api = UpstreamApi.ANTHROPIC if "anthropic-version" in request.headers else UpstreamApi.OPENAI
    call = Call("models", new_request_id(), "")
    now = state.clock()
    principal, reason = _authenticated(request, state, call, now)
    if principal is None:
        assert reason is not None
        return _deny(state, call, api, Unauthenticated(), (reason,))
    refused = _locked(state, call, api, now)
    if refused is not None:
        return refused
    name = request.match_info["model_id"]
    model = state.snapshot.models.get(name)
    if model is None:
        call.model = _printable_name(name)
        return _deny(state, call, api, NotFound(), (Reason.MODEL_UNKNOWN,))
    call.model = model.name
    hidden = _hidden(state, principal, model, call, now)
    if hidden:
        return _deny(state, call, api, NotFound(), hidden)
    _record_later(state, call.event(EventName.REQUEST_COMPLETED, now, status=200, outcome="ok"))
    return web.Response(
        body=orjson.dumps(listing.model_entry(api, model)),
        content_type=_JSON,
        headers={REQUEST_ID_HEADER: call.request_id},
    )


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
    state: GatewayState, admin: AdminBackend | None = None, *, data_routes: bool = True
) -> web.Application:
    """The data plane (``data_routes``) and/or the admin API (``admin``) on one listener;
    a listener without the admin API answers its paths as unsupported routes."""
    # client_max_size is a backstop only; read_body enforces the limit with a clean 413.
    app = web.Application(
        client_max_size=state.limits.max_body_bytes + 1,
        middlewares=[error_middleware, reserve_middleware],
    )
    app[STATE_KEY] = state
    app[SERVES_ADMIN_KEY] = admin is not None
    app.on_response_prepare.append(_server_header)
    if data_routes:
        for endpoint in apis.ENDPOINTS:
            app.router.add_post(endpoint.path, model_handler(endpoint))
        app.router.add_get("/v1/models", list_models)
        app.router.add_get("/v1/models/{model_id:.+}", retrieve_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if admin is not None:
        from garrison.admin.api import add_admin_routes

        add_admin_routes(app, admin)
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp announces "Python/3.11 aiohttp/x.y"; callers learn nothing about our stack.
    response.headers["Server"] = "garrison"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: anything unexpected becomes a clean error in the API's shape, never a trace."""
    api = UpstreamApi.ANTHROPIC if request.path == "/v1/messages" else UpstreamApi.OPENAI
    admin = request.path.startswith(ADMIN_PREFIX + "/") and request.app[SERVES_ADMIN_KEY]

    def body(exc: GarrisonError) -> bytes:
        return admin_error_body(exc) if admin else apis.error_body(api, exc)

    try:
        return await handler(request)
    except web.HTTPNotFound:
        if admin:
            exc404 = NotFound(public_message="Unknown admin endpoint.")
            return web.Response(status=404, body=body(exc404), content_type=_JSON)
        return await not_found(request)
    except web.HTTPMethodNotAllowed as refused:
        exc405 = BadRequest(public_message="Method not allowed.")
        allow = ", ".join(sorted(refused.allowed_methods))
        return web.Response(
            status=405, body=body(exc405), content_type=_JSON, headers={"Allow": allow}
        )
    except web.HTTPException:
        raise
    except GarrisonError as exc:
        return web.Response(status=exc.status, body=body(exc), content_type=_JSON)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error on %s", request.path)
        return web.Response(status=500, body=body(GarrisonError()), content_type=_JSON)


__all__ = ["STATE_KEY", "build_app", "new_request_id"]
