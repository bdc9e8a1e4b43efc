"""Admin routes for locks (kill switches): place, list, lift."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from garrison.admin import (
    emergency,
    identity_api,
    schemas,
)
from garrison.admin.authz import Action, roles_of
from garrison.admin.base import (
    FLAG_SCHEMA,
    Ctx,
    Route,
    query_flag,
)
from garrison.domain.locks import LockKind
from garrison.domain.networks import parse_address, parse_network
from garrison.domain.roles import Role
from garrison.errors import (
    BadRequest,
)
from garrison.store import locks as store_locks

log = logging.getLogger("garrison.admin")


LOCK_SCOPES = {LockKind.CREDENTIAL: "credential", LockKind.PRINCIPAL: "principal"}


async def refuse_self_lockout(ctx: Ctx, kind: LockKind, ref: str) -> None:
    """A security-admin's lock that would cover their own call could leave nobody able to
    lift it through the API (which honours locks): refuse it, and say what to use instead.
    (A vendor-manager may lock their own vendor: a security-admin can lift it.)"""
    if kind is LockKind.ALL or Role.SECURITY_ADMIN not in roles_of(ctx.admin):
        return  # a global lockdown leaves the admin API open by design
    try:
        target, _ = await ctx.read(store_locks.resolve_target, kind, ref)
    except BadRequest:
        return  # the write will refuse it with the same message
    except sa.exc.OperationalError:
        if ctx.backend.emergency_lock is None:
            raise
        try:  # the database cannot be read: the snapshot, as the emergency journal does
            target, _ = emergency.resolve(ctx.state.snapshot, kind, ref)
        except BadRequest:
            return
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
            f"this {kind.value} lock would cover your own call and lock "
            "the admin API against you; have another admin place it, or use `lock all` "
            "(which leaves the admin API open)",
            rule="no-self-lockout",
        )


async def list_locks(ctx: Ctx) -> Any:
    ended = query_flag(ctx, "all")
    return await ctx.read(store_locks.list_locks, ctx.now, include_ended=ended)


async def create_lock(ctx: Ctx) -> Any:
    body: schemas.LockCreate = ctx.body
    kind = LockKind(body.kind)
    # ``offline``: authorised from the snapshot when the database cannot be read (the
    # emergency journal below then holds the lock).
    if kind in LOCK_SCOPES:
        await ctx.require(Action.LOCK, LOCK_SCOPES[kind], body.target, offline=True)
    elif kind is LockKind.VENDOR:
        await ctx.require(Action.LOCK, "org", body.target, offline=True)
    else:
        await ctx.require(Action.LOCK_WIDE)
    if body.incident is not None:
        await ctx.require(Action.MANAGE_INCIDENTS)
    await refuse_self_lockout(ctx, kind, body.target)
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


ROUTES: tuple[Route, ...] = (
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
)
