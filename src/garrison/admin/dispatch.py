"""The admin pipeline every admin route runs through: authenticate (a Garrison key, as a model
call is), authorise by role and reach, parse the body, run the handler, answer in the admin
error shape, and record the call (``admin.read``, ``admin.denied``, ``admin.failed``).
Writes go through the directory on behalf of the admin, whose ``origin`` names the admin,
key, address and request id; after a write this process loads the new snapshot before
answering.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from garrison.admin.authz import reach, roles_of, scope_of
from garrison.admin.base import (
    BACKEND_KEY,
    PROCESS_KEY,
    B,
    Ctx,
    Refused,
    Route,
)
from garrison.admin_wire import admin_error_body, rule_of
from garrison.audit import AuditEvent
from garrison.audit.payload_base import ABSENT, Absent
from garrison.audit.payloads_admin import AdminDenied, AdminFailed, AdminRead, AdminUnchanged
from garrison.domain import (
    Reason,
)
from garrison.edge.admission import admit
from garrison.edge.process import ProcessState
from garrison.edge.request import peer_address, read_body
from garrison.edge.request_ids import new_request_id
from garrison.errors import (
    AuditUnavailable,
    BadRequest,
    ClientError,
    Forbidden,
    GarrisonError,
    Unauthenticated,
)
from garrison.store.key_containment import LOCKED_RULE

log = logging.getLogger("garrison.admin")


# The largest real admin request (a vendor with 64 networks and 64 compartments) is a few
# KB; 64 KiB refuses junk without reading megabytes of it.
ADMIN_MAX_BODY_BYTES = 64 * 1024


# Refusals whose rule has a reason code of its own (else admin.invalid_request).
RULE_REASONS = {LOCKED_RULE: Reason.LOCKED}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_nul(v) for v in value)
    return False


def parse_body(model: type[B], raw: bytes) -> B:
    if not raw.strip():
        raise BadRequest("the request body must be a JSON object")
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            where = ".".join(str(part) for part in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise BadRequest("; ".join(problems[:10])) from None
    # PostgreSQL text cannot hold U+0000 (SQLite can): refused here on both databases,
    # a clean 400 instead of a failed write (500) on one of them.
    if _has_nul(body.model_dump()):
        raise BadRequest("text must not contain the NUL character (U+0000)")
    return body


def json_response(status: int, value: Any, request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(value),
        content_type="application/json",
        headers={"x-request-id": request_id, "cache-control": "no-store"},
    )


def error_response(exc: GarrisonError, request_id: str) -> web.Response:
    headers = {"x-request-id": request_id, "cache-control": "no-store"}
    if exc.status == 401:
        headers["www-authenticate"] = 'Bearer realm="garrison-admin"'
    return web.Response(
        status=exc.status,
        body=admin_error_body(exc, request_id),
        content_type="application/json",
        headers=headers,
    )


def record(state: ProcessState, event: AuditEvent) -> None:
    try:
        state.audit.append_later(event)
    except AuditUnavailable:
        log.error("audit queue refused %s", event.name)


def record_failure(
    state: ProcessState,
    request: web.Request,
    actor: str,
    credential_id: str,
    request_id: str,
    exc: Exception,
) -> None:
    failed = AdminFailed(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        status=exc.status if isinstance(exc, GarrisonError) else 500,
        error=exc.code if isinstance(exc, GarrisonError) else "internal_error",
    )
    record(
        state,
        AuditEvent(
            failed.NAME,
            at=state.clock(),
            actor=actor,
            request_id=request_id,
            credential_id=credential_id,
            data=failed.as_data(),
            payload=failed,
        ),
    )


def endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[PROCESS_KEY]
        backend = request.app[BACKEND_KEY]
        request_id = new_request_id()
        now = state.clock()
        address = peer_address(request, state)
        snap = state.snapshot
        # The one admission step (authenticate → locks); a global lockdown does not apply
        # here: admins must be able to lift it.
        caller = admit(request, state, now, address, include_global=False)
        auth, session = caller.auth, caller.session
        # What names the caller's credential: the key id, or the sign-in session's id.
        credential_id = caller.credential_id

        def denied(
            reason: Reason,
            status: int,
            actor: str | None,
            *,
            key_id: str | Absent | None = ABSENT,
            lock_id: str | Absent = ABSENT,
            rule: str | Absent | None = ABSENT,
        ) -> None:
            payload = AdminDenied(
                method=request.method,
                path=request.path,
                client_address=str(address),
                status=status,
                reason_codes=(reason.value,),
                key_id=key_id,
                lock_id=lock_id,
                rule=rule,
            )
            record(
                state,
                AuditEvent(
                    payload.NAME,
                    at=state.clock(),
                    actor=actor,
                    request_id=request_id,
                    credential_id=credential_id,
                    data=payload.as_data(),
                    payload=payload,
                ),
            )

        if not auth.ok or auth.principal is None or credential_id is None:
            reason = auth.reason or Reason.CREDENTIAL_MISSING
            denied(reason, 401, None, key_id=auth.key_id)
            return error_response(Unauthenticated(), request_id)
        admin = auth.principal
        if session is not None:
            from garrison.admin.session_api import session_admin

            # The token's roles (narrowed by the provider's groups at sign-in) ∩ the directory's.
            admin = session_admin(admin, session)
        if auth.credential is not None and auth.credential.canary:
            # Whatever the call, a canary's use must reach the detectors.
            canary = AdminRead(method=request.method, path=request.path, address=str(address))
            record(
                state,
                AuditEvent(
                    canary.NAME,
                    at=now,
                    actor=admin.id,
                    request_id=request_id,
                    principal_id=admin.id,
                    credential_id=credential_id,
                    data=canary.as_data(),
                    payload=canary,
                ),
            )
        # A locked key, person, org or network cannot administer either.
        lock = caller.lock
        if lock is not None:
            denied(Reason.LOCKED, 403, admin.id, lock_id=lock.id)
            return error_response(Forbidden("locked"), request_id)
        admin_ctx = Ctx(
            request=request,
            state=state,
            backend=backend,
            request_id=request_id,
            admin=admin,
            credential_id=credential_id,
            address=str(address),
            scope=scope_of(admin, snap.orgs),
            credential=auth.credential,
            session=session,
        )
        ctx = admin_ctx
        try:
            if not route.open_to_all and not roles_of(admin):
                raise Refused(Reason.ADMIN_NO_ROLE, Forbidden("you hold no admin role"))
            if route.action is not None:
                decision = reach(admin, route.action, ctx.scope)
                if not decision.allowed:
                    raise Refused(
                        decision.reason, Forbidden(f"your roles do not allow {route.action.value}")
                    )
            if route.body is not None:
                raw = await read_body(request, state, ADMIN_MAX_BODY_BYTES)
                ctx.body = parse_body(route.body, raw)
            result = await route.handler(ctx)
        except Refused as refused:
            denied(refused.reason, refused.error.status, admin.id)
            return error_response(refused.error, request_id)
        except ClientError as exc:
            rule = rule_of(exc)
            denied(
                RULE_REASONS.get(rule or "", Reason.ADMIN_INVALID), exc.status, admin.id, rule=rule
            )
            return error_response(exc, request_id)
        except Exception as exc:
            # Ours, not the caller's: the call is still in the record (the error middleware
            # answers it and logs the detail).
            record_failure(state, request, admin.id, ctx.credential_id, request_id, exc)
            raise
        if request.method != "GET":
            # The change's event is in the audit outbox: have the writer integrate it, so
            # the answer means "in the tree, exported, seen by detection". If the log is
            # down the change stands and its record waits in the outbox.
            try:
                await state.audit.integrate()
            except AuditUnavailable as exc:
                log.warning("admin change %s not yet in the audit tree: %s", request_id, exc)
        if ctx.wrote:
            await backend.reload()
        elif route.audit_reads or ctx.attempted:
            # Durable before the answer leaves (what an admin read is in the record); a log
            # that cannot be written refuses the read, as it refuses model calls.
            query = dict(request.query)
            seen: AdminUnchanged | AdminRead = (
                AdminUnchanged(method=request.method, path=request.path, query=query)
                if ctx.attempted
                else AdminRead(method=request.method, path=request.path, query=query)
            )
            try:
                await state.audit.append(
                    AuditEvent(
                        seen.NAME,
                        at=state.clock(),
                        actor=admin.id,
                        request_id=request_id,
                        credential_id=ctx.credential_id,
                        data=seen.as_data(),
                        payload=seen,
                    ),
                )
            except AuditUnavailable:
                return error_response(AuditUnavailable(), request_id)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(ctx.status or route.status, result, request_id)

    return handle
