"""The admin API: HTTP/JSON under ``/admin/v1``, served by the gateway process.

Each call is authenticated with a Garrison key exactly as a model call is (hash, expiry,
network binding, vendor terms), then authorised by the caller's admin roles
(``garrison.admin.authz``). Writes go through the directory on behalf of the admin: one
transaction holding the change, its change-feed row and its audit event, whose actor is the
admin's principal id and whose ``origin`` names the admin, key, address and request id.
Refused calls are audit events too (``admin.denied`` with a reason code), and so are reads
(``admin.read``). After a write this process loads the new snapshot before answering, so
the change is enforced here when the client hears of it; other processes follow within
their snapshot poll.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import sqlalchemy as sa
from aiohttp import web
from pydantic import ValidationError

from garrison.admin import (
    access_api,
    alerts_api,
    emergency,
    identity_api,
    model_proposal,
    schemas,
)
from garrison.admin.authz import Action, reach, roles_of, scope_of
from garrison.admin.base import (
    BACKEND_KEY,
    FLAG_SCHEMA,
    AdminBackend,
    B,
    Ctx,
    Refused,
    Route,
    query_flag,
)
from garrison.admin.shape import ADMIN_PREFIX, admin_error_body, admin_message, rule_of
from garrison.audit import AuditEvent, EventName
from garrison.domain import (
    AuthStyle,
    Level,
    PrincipalKind,
    Reason,
    Status,
    UpstreamApi,
    VendorStatus,
)
from garrison.domain.incidents import IncidentStatus
from garrison.domain.locks import LockKind
from garrison.domain.networks import parse_address, parse_network
from garrison.domain.roles import Role
from garrison.domain.upstream_tls import check_upstream_tls, parse_upstream_tls
from garrison.errors import (
    AuditUnavailable,
    BadRequest,
    ClientError,
    Forbidden,
    GarrisonError,
    Unauthenticated,
)
from garrison.gateway.app import STATE_KEY, new_request_id, peer_address, presented_key, read_body
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream_tls import check_tls_files
from garrison.identity import authenticate
from garrison.identity.access_tokens import SessionClaims
from garrison.identity.token_auth import DPOP_HEADER, authenticate_token, dpop_token
from garrison.respond import render
from garrison.store import changes as changes_rules
from garrison.store import incidents as store_incidents
from garrison.store import locks as store_locks
from garrison.store import queries
from garrison.store.key_containment import LOCKED_RULE
from garrison.store.vendors import vendor_status

log = logging.getLogger("garrison.admin")

# The largest real admin request (a vendor with 64 networks and 64 compartments) is a few
# KB; 64 KiB refuses junk without reading megabytes of it.
ADMIN_MAX_BODY_BYTES = 64 * 1024
# Reports count "dormant" seats over at most ten years of history.
DORMANT_DAYS_MAX = 3650


# Refusals whose rule has a reason code of its own (else admin.invalid_request).
_RULE_REASONS = {LOCKED_RULE: Reason.LOCKED}


def _parse(model: type[B], raw: bytes) -> B:
    if not raw.strip():
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            where = ".".join(str(part) for part in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise BadRequest("; ".join(problems[:10])) from None


def _json(status: int, value: Any, request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(value),
        content_type="application/json",
        headers={"x-request-id": request_id, "cache-control": "no-store"},
    )


def _error(exc: GarrisonError, request_id: str) -> web.Response:
    headers = {"x-request-id": request_id, "cache-control": "no-store"}
    if exc.status == 401:
        headers["www-authenticate"] = 'Bearer realm="garrison-admin"'
    return web.Response(
        status=exc.status,
        body=admin_error_body(exc, request_id),
        content_type="application/json",
        headers=headers,
    )


def _record(state: GatewayState, event: AuditEvent) -> None:
    try:
        state.audit.append_later(event)
    except AuditUnavailable:
        log.error("audit queue refused %s", event.name)


def _failed(
    state: GatewayState,
    request: web.Request,
    actor: str,
    credential_id: str,
    request_id: str,
    exc: Exception,
) -> None:
    _record(
        state,
        AuditEvent(
            EventName.ADMIN_FAILED,
            at=state.clock(),
            actor=actor,
            request_id=request_id,
            credential_id=credential_id,
            data={
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "status": exc.status if isinstance(exc, GarrisonError) else 500,
                "error": exc.code if isinstance(exc, GarrisonError) else "internal_error",
            },
        ),
    )


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        backend = request.app[BACKEND_KEY]
        request_id = new_request_id()
        now = state.clock()
        address = peer_address(request, state)
        snap = state.snapshot
        token = dpop_token(request.headers.get("authorization"))
        session: SessionClaims | None = None
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
            auth, session = bound.auth, bound.session
        else:
            auth = authenticate(
                presented_key(request),
                credentials=snap.credentials,
                principals=snap.principals,
                orgs=snap.orgs,
                pepper=state.pepper,
                now=now,
                address=address,
            )
        # What names the caller's credential: the key id, or the sign-in session's id.
        credential_id = auth.key_id if auth.credential is not None or session is not None else None

        def denied(reason: Reason, status: int, actor: str | None, **more: Any) -> None:
            _record(
                state,
                AuditEvent(
                    EventName.ADMIN_DENIED,
                    at=state.clock(),
                    actor=actor,
                    request_id=request_id,
                    credential_id=credential_id,
                    data={
                        "method": request.method,
                        "path": request.path,
                        "address": str(address),
                        "status": status,
                        "reasons": [reason.value],
                        **more,
                    },
                ),
            )

        if not auth.ok or auth.principal is None or credential_id is None:
            reason = auth.reason or Reason.CREDENTIAL_MISSING
            denied(reason, 401, None, presented_key_id=auth.key_id)
            return _error(Unauthenticated(), request_id)
        admin = auth.principal
        if session is not None:
            from garrison.admin.session_api import session_admin

            # The provider's groups narrowed this session's roles at sign-in.
            admin = await session_admin(backend.engine, admin, session)
        if auth.credential is not None and auth.credential.canary:
            # Whatever the call, a canary's use must reach the detectors.
            _record(
                state,
                AuditEvent(
                    EventName.ADMIN_READ,
                    at=now,
                    actor=admin.id,
                    request_id=request_id,
                    principal_id=admin.id,
                    credential_id=credential_id,
                    data={"method": request.method, "path": request.path, "address": str(address)},
                ),
            )
        # A locked key, person, org or network cannot administer either (a global lockdown
        # does not apply here: admins must be able to lift it).
        lock = snap.locks.covering(
            now,
            credential_id=credential_id,
            principal_id=admin.id,
            org_id=admin.org_id,
            address=address,
            include_global=False,
        )
        if lock is not None:
            denied(Reason.LOCKED, 403, admin.id, lock_id=lock.id)
            return _error(Forbidden("locked"), request_id)
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
                ctx.body = _parse(route.body, raw)
            result = await route.handler(ctx)
        except Refused as refused:
            denied(refused.reason, refused.error.status, admin.id)
            return _error(refused.error, request_id)
        except ClientError as exc:
            rule = rule_of(admin_message(exc))
            denied(
                _RULE_REASONS.get(rule or "", Reason.ADMIN_INVALID), exc.status, admin.id, rule=rule
            )
            return _error(exc, request_id)
        except Exception as exc:
            # Ours, not the caller's: the call is still in the record (the error middleware
            # answers it and logs the detail).
            _failed(state, request, admin.id, ctx.credential_id, request_id, exc)
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
            try:
                await state.audit.append(
                    AuditEvent(
                        EventName.ADMIN_UNCHANGED if ctx.attempted else EventName.ADMIN_READ,
                        at=state.clock(),
                        actor=admin.id,
                        request_id=request_id,
                        credential_id=ctx.credential_id,
                        data={
                            "method": request.method,
                            "path": request.path,
                            "query": dict(request.query),
                        },
                    ),
                )
            except AuditUnavailable:
                return _error(AuditUnavailable(), request_id)
        if isinstance(result, web.StreamResponse):
            return result
        return _json(ctx.status or route.status, result, request_id)

    return handle


# ── handlers ───────────────────────────────────────────────────────────────────────────────
def _level(name: str | None) -> Level | None:
    return None if name is None else Level.parse(name)


def _query_int(ctx: Ctx, name: str, default: int, low: int, high: int) -> int:
    text = ctx.request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name} must be between {low} and {high}")
    return value


async def whoami(ctx: Ctx) -> Any:
    return {
        "id": ctx.admin.id,
        "name": ctx.admin.name,
        "org_id": ctx.admin.org_id,
        "roles": sorted(ctx.admin.roles),
        "credential_id": ctx.credential_id,
        "address": ctx.address,
        "vendor_scope": sorted(ctx.scope),
        **(await identity_api.whoami_extra(ctx)),
    }


async def list_orgs(ctx: Ctx) -> Any:
    return await ctx.read(queries.list_orgs, ctx.reads_over())


async def create_org(ctx: Ctx) -> Any:
    from garrison.domain import OrgKind

    body: schemas.OrgCreate = ctx.body
    org_id = await ctx.write(ctx.directory().create_org, body.name, OrgKind.INTERNAL, now=ctx.now)
    return {"id": org_id, "name": body.name}


async def list_vendors(ctx: Ctx) -> Any:
    return await ctx.read(queries.list_vendors, ctx.now, ctx.reads_over())


async def show_vendor(ctx: Ctx) -> Any:
    days = _query_int(ctx, "dormant_days", queries.DORMANT_DAYS, 1, DORMANT_DAYS_MAX)
    return await ctx.read(
        queries.vendor_report,
        ctx.request.match_info["ref"],
        ctx.now,
        dormant_days=days,
        orgs=ctx.reads_over(),
    )


async def create_vendor(ctx: Ctx) -> Any:
    body: schemas.VendorCreate = ctx.body
    now = ctx.now
    org_id = await ctx.write(
        ctx.directory().create_vendor,
        body.name,
        sponsor=body.sponsor,
        contract_start=schemas.epoch(body.contract_start) if body.contract_start else now,
        contract_end=schemas.epoch(body.contract_end),
        networks=body.networks,
        seat_limit=body.seat_limit,
        ceiling_level=Level.parse(body.ceiling),
        ceiling_compartments=body.ceiling_compartments,
        security_review_at=schemas.epoch(body.security_review_at)
        if body.security_review_at
        else None,
        agreement_ref=body.agreement_ref,
        now=now,
    )
    return {"id": org_id, "name": body.name, "status": VendorStatus.ONBOARDING.value}


async def update_vendor(ctx: Ctx) -> Any:
    body: schemas.VendorUpdate = ctx.body
    ref = ctx.request.match_info["ref"]
    changes = await ctx.write(
        ctx.directory().update_vendor,
        ref,
        now=ctx.now,
        contract_end=schemas.epoch(body.contract_end) if body.contract_end else None,
        networks=body.networks,
        seat_limit=body.seat_limit,
        ceiling_level=_level(body.ceiling),
        ceiling_compartments=body.ceiling_compartments,
        security_review_at=schemas.epoch(body.security_review_at)
        if body.security_review_at
        else None,
        agreement_ref=body.agreement_ref,
    )
    return {"changes": changes}


_STATUS_ACTIONS = {
    "active": Action.ACTIVATE_VENDOR,
    "suspended": Action.SUSPEND_VENDOR,
    "offboarded": Action.OFFBOARD_VENDOR,
}


async def set_vendor_status(ctx: Ctx) -> Any:
    body: schemas.StatusChange = ctx.body
    ref = ctx.request.match_info["ref"]
    await ctx.require(_STATUS_ACTIONS[body.status], "org", ref)
    target = VendorStatus(body.status)
    if target is VendorStatus.ACTIVE:
        current = await ctx.read(vendor_status, ref)
        if current is VendorStatus.EXPIRED:
            # Restoring an expired vendor (its contract clock was fooled, or the contract was
            # extended late) reopens access for all its people: two admins.
            from garrison.admin.access_api import propose

            return await propose(
                ctx,
                "vendor-restore",
                ref,
                {"reason": body.reason},
                f"restore expired vendor {ref} to active ({body.reason or 'no reason given'})",
            )
    await ctx.write(ctx.directory().set_vendor_status, ref, target, now=ctx.now, reason=body.reason)
    return {"vendor": ref, "status": target.value}


async def list_principals(ctx: Ctx) -> Any:
    kind = ctx.request.query.get("kind")
    if kind is not None and kind not in {k.value for k in PrincipalKind}:
        raise BadRequest("query parameter kind must be human or service")
    return await ctx.read(
        queries.list_principals, ctx.reads_over(), org=ctx.request.query.get("org"), kind=kind
    )


async def show_principal(ctx: Ctx) -> Any:
    return await ctx.read(
        queries.principal_report, ctx.request.match_info["ref"], ctx.now, ctx.reads_over()
    )


async def create_principal(ctx: Ctx) -> Any:
    body: schemas.PrincipalCreate = ctx.body
    await ctx.require(Action.CREATE_PRINCIPAL, "org", body.org)
    if body.roles:
        await ctx.require(Action.SET_PRINCIPAL_ACCESS)
    if body.kind == PrincipalKind.SERVICE.value and body.owner is None:
        # The issuer answers for a service account by default.
        body = body.model_copy(update={"owner": ctx.admin.id})
    create = functools.partial(
        ctx.directory().create_principal,
        body.name,
        org=body.org,
        kind=PrincipalKind(body.kind),
        clearance=Level.parse(body.clearance),
        compartments=body.compartments,
        roles=body.roles,
        now=ctx.now,
        owner=body.owner,
    )
    await asyncio.to_thread(create, dry_run=True)  # every rule, now
    level = Level.parse(body.clearance)
    if changes_rules.new_principal_is_sensitive(level, body.compartments, body.roles):
        return await access_api.propose(
            ctx,
            "principal-create",
            body.name,
            body.model_dump(),
            f"add {body.name} in {body.org}: {level.label} {body.compartments} {body.roles}",
        )
    principal_id = await ctx.write(create)
    if body.invite and body.kind == PrincipalKind.HUMAN.value:
        target = await ctx.read(queries.find, queries.p, principal_id, "principal")
        return {
            "id": principal_id,
            "name": body.name,
            **await identity_api.invite_principal(ctx, target),
        }
    return {"id": principal_id, "name": body.name}


async def update_principal(ctx: Ctx) -> Any:
    body: schemas.PrincipalUpdate = ctx.body
    ref = ctx.request.match_info["ref"]
    if not body.access_change() and body.status is None:
        raise BadRequest("nothing to change")
    if body.access_change():
        await ctx.require(Action.SET_PRINCIPAL_ACCESS, "principal", ref)
    if body.status is not None:
        await ctx.require(Action.SET_PRINCIPAL_STATUS, "principal", ref)
    update = functools.partial(
        ctx.directory().update_principal,
        ref,
        now=ctx.now,
        clearance=_level(body.clearance),
        compartments=body.compartments,
        roles=body.roles,
        status=Status(body.status) if body.status else None,
    )
    # Every rule is checked now (a dry run); a change that raises access then waits.
    preview = await asyncio.to_thread(update, dry_run=True)
    held = await ctx.read(_held_roles, ref)
    if changes_rules.principal_change_is_sensitive(preview, held_roles=held):
        target = await ctx.read(queries.find, queries.p, ref, "principal")
        return await access_api.propose(
            ctx,
            "principal-access",
            target.id,
            body.model_dump(exclude_none=True),
            f"change {target.name}: {preview}",
        )
    return {"changes": await ctx.write(update, forbid_sensitive=True)}


def _held_roles(conn: Any, ref: str) -> frozenset[str]:
    from garrison.store.snapshot import parse_compartments

    return parse_compartments(queries.find(conn, queries.p, ref, "principal").roles)


async def list_keys(ctx: Ctx) -> Any:
    return await ctx.read(
        queries.list_keys, ctx.now, ctx.reads_over(), principal=ctx.request.query.get("principal")
    )


async def list_models(ctx: Ctx) -> Any:
    return await ctx.read(queries.list_models)


async def show_model(ctx: Ctx) -> Any:
    return await ctx.read(queries.show_model, ctx.request.match_info["ref"])


async def create_model(ctx: Ctx) -> Any:
    body: schemas.ModelCreate = ctx.body
    api = UpstreamApi(body.api)
    if body.auth_style is not None:
        style = AuthStyle(body.auth_style)
    elif body.upstream_key is None:
        style = AuthStyle.NONE
    else:
        style = AuthStyle.X_API_KEY if api is UpstreamApi.ANTHROPIC else AuthStyle.BEARER
    create = functools.partial(
        ctx.directory().create_model,
        body.name,
        upstream_url=body.upstream_url,
        upstream_model=body.upstream_model or body.name,
        api=api,
        auth_style=style,
        level=Level.parse(body.level),
        compartments=body.compartments,
        upstream_key=body.upstream_key,
        extra_fields=body.extra_fields,
        upstream_tls=check_upstream_tls(
            body.upstream_url,
            body.tls_ca_file,
            body.tls_client_cert_file,
            body.tls_client_key_file,
        ),
        now=ctx.now,
    )
    await asyncio.to_thread(create, dry_run=True)  # every rule, now
    await asyncio.to_thread(check_tls_files, create.keywords["upstream_tls"])
    proposal = await model_proposal.propose_if_sensitive(ctx, body, style)
    if proposal is not None:
        return proposal
    model_id = await ctx.write(create)
    return {"id": model_id, "name": body.name}


async def update_model(ctx: Ctx) -> Any:
    body: schemas.ModelUpdate = ctx.body
    ref = ctx.request.match_info["ref"]
    update = functools.partial(
        ctx.directory().update_model,
        ref,
        now=ctx.now,
        upstream_url=body.upstream_url,
        upstream_model=body.upstream_model,
        api=UpstreamApi(body.api) if body.api else None,
        auth_style=AuthStyle(body.auth_style) if body.auth_style else None,
        upstream_key=body.upstream_key,
        clear_upstream_key=body.clear_upstream_key,
        level=_level(body.level),
        compartments=body.compartments,
        extra_fields=body.extra_fields,
        tls_ca_file=body.tls_ca_file,
        tls_client_cert_file=body.tls_client_cert_file,
        tls_client_key_file=body.tls_client_key_file,
        clear_upstream_tls=body.clear_upstream_tls,
    )
    preview = await asyncio.to_thread(update, dry_run=True)
    if "upstream_tls" in preview:
        await asyncio.to_thread(check_tls_files, parse_upstream_tls(preview["upstream_tls"][1]))
    if changes_rules.model_change_is_sensitive(preview):
        if body.upstream_key is not None:
            # A pending change is stored in the clear: credentials never wait in it.
            raise BadRequest(
                "lowering a model's level or removing a compartment takes a second admin; "
                "change the upstream credential in a separate call"
            )
        target = await ctx.read(queries.find, queries.m, ref, "model")
        wanted = body.model_dump(exclude_none=True, exclude_defaults=True)
        return await access_api.propose(
            ctx, "model-update", target.id, wanted, f"change model {target.name}: {preview}"
        )
    return {"changes": await ctx.write(update, forbid_sensitive=True)}


async def rotate_vendor_keys(ctx: Ctx) -> Any:
    body: schemas.VendorKeyRotation = ctx.body
    ref = ctx.request.match_info["ref"]
    await ctx.require(Action.ROTATE_KEY, "org", ref)
    issued = await ctx.write(
        ctx.directory().rotate_vendor_keys,
        ref,
        now=ctx.now,
        reason=body.reason,
        may_issue=lambda row: not identity_api.exceeds(ctx.admin, row),
    )
    return {"vendor": ref, "issued": [identity_api.issued_any(k) for k in issued]}


_LOCK_SCOPES = {LockKind.CREDENTIAL: "credential", LockKind.PRINCIPAL: "principal"}


async def _refuse_self_lockout(ctx: Ctx, kind: LockKind, ref: str) -> None:
    """A security-admin's lock that would cover their own call could leave nobody able to
    lift it through the API (which honours locks): refuse it, and say what to use instead.
    (A vendor-manager may lock their own vendor: a security-admin can lift it.)"""
    if kind is LockKind.ALL or Role.SECURITY_ADMIN not in roles_of(ctx.admin):
        return  # a global lockdown leaves the admin API open by design
    try:
        target, _ = await ctx.read(store_locks.resolve_target, kind, ref)
    except BadRequest:
        return  # the write will refuse it with the same message
    if kind is LockKind.NETWORK:
        own = parse_address(ctx.address) in parse_network(target)
    else:
        own = target == {
            LockKind.CREDENTIAL: ctx.credential_id,
            LockKind.PRINCIPAL: ctx.admin.id,
            LockKind.VENDOR: ctx.admin.org_id,
        }.get(kind)
    if own:
        raise BadRequest(
            f"rule no-self-lockout: this {kind.value} lock would cover your own call and lock "
            "the admin API against you; have another admin place it, or use `lock all` "
            "(which leaves the admin API open)"
        )


async def list_locks(ctx: Ctx) -> Any:
    ended = query_flag(ctx, "all")
    return await ctx.read(store_locks.list_locks, ctx.now, include_ended=ended)


async def create_lock(ctx: Ctx) -> Any:
    body: schemas.LockCreate = ctx.body
    kind = LockKind(body.kind)
    if kind in _LOCK_SCOPES:
        await ctx.require(Action.LOCK, _LOCK_SCOPES[kind], body.target)
    elif kind is LockKind.VENDOR:
        await ctx.require(Action.LOCK, "org", body.target)
    else:
        await ctx.require(Action.LOCK_WIDE)
    if body.incident is not None:
        await ctx.require(Action.MANAGE_INCIDENTS)
    await _refuse_self_lockout(ctx, kind, body.target)
    try:
        return await ctx.write(
            ctx.directory().create_lock,
            kind,
            body.target,
            reason=body.reason,
            now=ctx.now,
            ttl_s=body.ttl_s,
            incident=body.incident,
        )
    except sa.exc.OperationalError as exc:
        if ctx.backend.emergency_lock is None:
            raise
        # The database cannot be written (and so neither can the log): a lock must still
        # hold. Journalled, enforced now, folded into the database and the log when it is back.
        log.error("lock write failed (%s): placing it through the emergency journal", exc)
        record = emergency.lock_record(
            ctx.state.snapshot,
            kind,
            body.target,
            reason=body.reason,
            actor=ctx.admin.id,
            now=ctx.now,
            ttl_s=body.ttl_s,
        )
        await ctx.backend.emergency_lock(record)
        ctx.wrote = True
        return {
            **record,
            "incident_id": None,
            "emergency": True,
            "note": "placed while the database cannot be written: enforced now, recorded in "
            "the audit log as soon as it can be written",
        }


async def lift_lock(ctx: Ctx) -> Any:
    body: schemas.LockLift = ctx.body
    identity_api.require_fresh_sign_in(ctx)  # lifting containment: fresh MFA with a session
    lock = await ctx.read(store_locks.lock_row, ctx.request.match_info["lock_id"])
    if lock is not None and lock.kind == LockKind.ALL.value:
        # Lifting a lockdown is a two-person act: each person's own key, never one the other
        # made.
        identity_api.require_approver_credential(ctx, lock.lift_requested_by)
        return await ctx.write(
            identity_api.approver_directory(ctx).lift_lock,
            ctx.request.match_info["lock_id"],
            reason=body.reason,
            now=ctx.now,
        )
    return await ctx.write(
        ctx.directory().lift_lock,
        ctx.request.match_info["lock_id"],
        reason=body.reason,
        now=ctx.now,
    )


async def list_incidents(ctx: Ctx) -> Any:
    return await ctx.read(store_incidents.list_incidents)


async def open_incident(ctx: Ctx) -> Any:
    body: schemas.IncidentOpen = ctx.body
    incident_id = await ctx.write(
        ctx.directory().open_incident,
        body.title,
        now=ctx.now,
        since=schemas.epoch(body.since) if body.since else None,
        vendors=body.vendors,
        principals=body.principals,
        credentials=body.credentials,
    )
    return {"id": incident_id, "status": "open"}


async def update_incident(ctx: Ctx) -> Any:
    body: schemas.IncidentUpdate = ctx.body
    return await ctx.write(
        ctx.directory().update_incident,
        ctx.request.match_info["incident_id"],
        now=ctx.now,
        status=IncidentStatus(body.status) if body.status else None,
        note=body.note,
    )


_REPORT_FORMATS = ("json", "md", "html")


async def incident_report(ctx: Ctx) -> Any:
    fmt = ctx.request.query.get("format", "json")
    if fmt not in _REPORT_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(_REPORT_FORMATS)}")
    report = await ctx.read(
        store_incidents.incident_report, ctx.request.match_info["incident_id"], ctx.now
    )
    if fmt == "md":
        return {"format": "md", "content": render.to_markdown(report)}
    if fmt == "html":
        return {"format": "html", "content": render.to_html(report)}
    return report


# Evidence waits this long for a signed checkpoint to cover the newest events (checkpoints
# are signed at least once a second while events flow).
EVIDENCE_CHECKPOINT_WAIT_S = 3.0


async def incident_evidence(ctx: Ctx) -> Any:
    from garrison.respond.evidence import build_evidence

    backend = ctx.backend
    if backend.db_path is None:
        raise BadRequest("evidence bundles need the embedded SQLite audit log")
    incident_id = ctx.request.match_info["incident_id"]
    deadline = time.monotonic() + EVIDENCE_CHECKPOINT_WAIT_S
    while True:
        try:
            bundle = await asyncio.to_thread(
                build_evidence,
                backend.engine,
                backend.db_path,
                incident_id,
                dict(backend.public_keys),
                ctx.now,
            )
        except LookupError as exc:
            bundle = None
            problem = str(exc)
        if bundle is not None and (
            not bundle["not_yet_checkpointed"] or time.monotonic() > deadline
        ):
            return bundle
        if bundle is None and time.monotonic() > deadline:
            raise BadRequest(problem)
        await asyncio.sleep(0.2)


ROUTES: tuple[Route, ...] = (
    *identity_api.ROUTES,
    *access_api.ROUTES,
    *alerts_api.ROUTES,
    Route("GET", "/whoami", "The calling admin: principal, roles, vendor scope.", whoami),
    Route("GET", "/orgs", "Organisations (the internal ones and vendors).", list_orgs, Action.READ),
    Route(
        "POST",
        "/orgs",
        "Add an internal org.",
        create_org,
        Action.CREATE_ORG,
        schemas.OrgCreate,
        201,
    ),
    Route("GET", "/vendors", "Vendors with status and contract.", list_vendors, Action.READ),
    Route(
        "POST",
        "/vendors",
        "Add a vendor (status onboarding).",
        create_vendor,
        Action.CREATE_VENDOR,
        schemas.VendorCreate,
        201,
    ),
    Route(
        "GET",
        "/vendors/{ref}",
        "Vendor report: terms, seats, keys with last use and sources, dormant accounts.",
        show_vendor,
        Action.READ,
        query=(
            (
                "dormant_days",
                "Days without a call (default 30).",
                {"type": "integer", "minimum": 1, "maximum": DORMANT_DAYS_MAX},
            ),
        ),
    ),
    Route(
        "PATCH",
        "/vendors/{ref}",
        "Change a vendor's terms.",
        update_vendor,
        Action.UPDATE_VENDOR,
        schemas.VendorUpdate,
    ),
    Route(
        "POST",
        "/vendors/{ref}/status",
        "Activate, suspend or offboard a vendor.",
        set_vendor_status,
        None,
        schemas.StatusChange,
    ),
    Route(
        "GET",
        "/principals",
        "People and service accounts.",
        list_principals,
        Action.READ,
        query=(
            ("org", "Only this org."),
            ("kind", "human or service.", {"enum": [k.value for k in PrincipalKind]}),
        ),
    ),
    Route(
        "POST",
        "/principals",
        "Add a person or a service account.",
        create_principal,
        Action.CREATE_PRINCIPAL,
        schemas.PrincipalCreate,
        201,
    ),
    Route(
        "GET",
        "/principals/{ref}",
        "A principal with its keys, their last use and sources.",
        show_principal,
        Action.READ,
    ),
    Route(
        "PATCH",
        "/principals/{ref}",
        "Change clearance, compartments, roles or status.",
        update_principal,
        None,
        schemas.PrincipalUpdate,
    ),
    Route(
        "GET",
        "/keys",
        "API keys (ids and state; never secrets).",
        list_keys,
        Action.READ,
        query=(("principal", "Only this principal's keys."),),
    ),
    Route(
        "POST",
        "/keys",
        "Create a service account's key (never a person's: they enroll); shown only here.",
        identity_api.create_key,
        Action.CREATE_KEY,
        schemas.KeyCreate,
        201,
    ),
    Route(
        "POST",
        "/keys/{key_id}/revoke",
        "Revoke a key at once (your own, or any in your reach).",
        identity_api.revoke_key,
        None,
        schemas.KeyRevoke,
        open_to_all=True,
    ),
    Route(
        "POST",
        "/keys/{key_id}/rotate",
        "Issue a successor and retire the key (a person's key rotated by an admin: revoked "
        "now, and the person gets a new enrollment code).",
        identity_api.rotate_key,
        None,
        schemas.KeyRotate,
        201,
        open_to_all=True,
    ),
    Route("GET", "/models", "The model registry.", list_models, Action.READ_MODELS, tag="models"),
    Route(
        "POST",
        "/models",
        "Register a model.",
        create_model,
        Action.WRITE_MODEL,
        schemas.ModelCreate,
        201,
        tag="models",
    ),
    Route(
        "GET",
        "/models/{ref}",
        "One registered model.",
        show_model,
        Action.READ_MODELS,
        tag="models",
    ),
    Route(
        "PATCH",
        "/models/{ref}",
        "Change a model's upstream, level or compartments.",
        update_model,
        Action.WRITE_MODEL,
        schemas.ModelUpdate,
        tag="models",
    ),
    Route(
        "POST",
        "/vendors/{ref}/rotate-keys",
        "Containment: revoke every key of the vendor's people and issue each a new one.",
        rotate_vendor_keys,
        None,
        schemas.VendorKeyRotation,
        201,
    ),
    Route(
        "GET",
        "/locks",
        "Locks in force (all=true: lifted and expired ones too).",
        list_locks,
        Action.READ_LOCKS,
        query=(("all", "Include lifted and expired locks.", FLAG_SCHEMA),),
        tag="locks",
    ),
    Route(
        "POST",
        "/locks",
        "Lock a credential, principal, vendor, model, network or everything; takes effect at "
        "once and cuts covered calls in flight.",
        create_lock,
        None,
        schemas.LockCreate,
        201,
        tag="locks",
    ),
    Route(
        "POST",
        "/locks/{lock_id}/lift",
        "Lift a lock (a global lockdown needs a second admin to confirm).",
        lift_lock,
        Action.UNLOCK,
        schemas.LockLift,
        tag="locks",
    ),
    Route(
        "GET", "/incidents", "Incidents.", list_incidents, Action.READ_INCIDENTS, tag="incidents"
    ),
    Route(
        "POST",
        "/incidents",
        "Open an incident.",
        open_incident,
        Action.MANAGE_INCIDENTS,
        schemas.IncidentOpen,
        201,
        tag="incidents",
    ),
    Route(
        "PATCH",
        "/incidents/{incident_id}",
        "Change status (transition table) or add a note.",
        update_incident,
        Action.MANAGE_INCIDENTS,
        schemas.IncidentUpdate,
        tag="incidents",
    ),
    Route(
        "GET",
        "/incidents/{incident_id}/report",
        "Blast-radius report from the audit log (format=json|md|html).",
        incident_report,
        Action.READ_INCIDENTS,
        query=(("format", "json, md or html.", {"enum": list(_REPORT_FORMATS)}),),
        tag="incidents",
    ),
    Route(
        "GET",
        "/incidents/{incident_id}/evidence",
        "Evidence bundle: events with inclusion proofs, the checkpoint, the public keys.",
        incident_evidence,
        Action.READ_INCIDENTS,
        tag="incidents",
    ),
)


async def openapi(ctx: Ctx) -> web.Response:
    from garrison.admin.openapi import document

    return web.Response(
        body=document(ROUTES),
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )


# The document maps every operation, parameter and limit: an admin's reading, not a stranger's
# (any admin role; not recorded per read, like a scrape).
OPENAPI_ROUTE = Route(
    "GET", "/openapi.json", "This document.", openapi, tag="meta", audit_reads=False
)


def add_admin_routes(app: web.Application, backend: AdminBackend) -> None:
    app[BACKEND_KEY] = backend
    app[identity_api.LIMITER_KEY] = identity_api.new_limiter()
    app.router.add_get(f"{ADMIN_PREFIX}/openapi.json", _endpoint(OPENAPI_ROUTE))
    # Unauthenticated by nature (the person has no key yet): rate-limited, every failure
    # audited.
    app.router.add_post(f"{ADMIN_PREFIX}/enroll", identity_api.enroll_endpoint)
    for route in ROUTES:
        app.router.add_route(route.method, ADMIN_PREFIX + route.path, _endpoint(route))
    if backend.signin is not None:
        from garrison.admin.session_api import add_session_routes

        add_session_routes(app, backend.signin)
    app.router.add_get("/metrics", _endpoint(alerts_api.METRICS_ROUTE))


__all__ = ["ADMIN_PREFIX", "ROUTES", "AdminBackend", "add_admin_routes"]
