"""Admin routes for principals (people and service accounts) and their keys."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from garrison.admin import (
    access_api,
    identity_api,
    schemas,
)
from garrison.admin.authz import Action
from garrison.admin.base import (
    Ctx,
    Route,
)
from garrison.admin.params import level_param
from garrison.domain import (
    Level,
    PrincipalKind,
    Status,
)
from garrison.errors import (
    BadRequest,
)
from garrison.store import changes as changes_rules
from garrison.store import queries


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
        clearance=level_param(body.clearance),
        compartments=body.compartments,
        roles=body.roles,
        status=Status(body.status) if body.status else None,
    )
    # Every rule is checked now (a dry run); a change that raises access then waits.
    preview = await asyncio.to_thread(update, dry_run=True)
    held = await ctx.read(held_roles, ref)
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


def held_roles(conn: Any, ref: str) -> frozenset[str]:
    from garrison.store.snapshot import parse_compartments

    return parse_compartments(queries.find(conn, queries.p, ref, "principal").roles)


async def list_keys(ctx: Ctx) -> Any:
    return await ctx.read(
        queries.list_keys, ctx.now, ctx.reads_over(), principal=ctx.request.query.get("principal")
    )


ROUTES: tuple[Route, ...] = (
    Route("GET", "/whoami", "The calling admin: principal, roles, vendor scope.", whoami),
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
)
