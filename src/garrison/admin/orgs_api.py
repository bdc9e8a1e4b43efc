"""Admin routes for organisations and vendors: terms, status, seats, key rotation."""

from __future__ import annotations

from typing import Any

from garrison.admin import identity_api, schemas
from garrison.admin.authz import Action
from garrison.admin.base import (
    Ctx,
    Route,
)
from garrison.admin.params import DORMANT_DAYS_MAX, level_param, query_int
from garrison.domain import (
    Level,
    VendorStatus,
)
from garrison.store import queries
from garrison.store.vendors import vendor_status


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
    days = query_int(ctx, "dormant_days", queries.DORMANT_DAYS, 1, DORMANT_DAYS_MAX)
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
        ceiling_level=level_param(body.ceiling),
        ceiling_compartments=body.ceiling_compartments,
        security_review_at=schemas.epoch(body.security_review_at)
        if body.security_review_at
        else None,
        agreement_ref=body.agreement_ref,
    )
    return {"changes": changes}


STATUS_ACTIONS = {
    "active": Action.ACTIVATE_VENDOR,
    "suspended": Action.SUSPEND_VENDOR,
    "offboarded": Action.OFFBOARD_VENDOR,
}


async def set_vendor_status(ctx: Ctx) -> Any:
    body: schemas.StatusChange = ctx.body
    ref = ctx.request.match_info["ref"]
    await ctx.require(STATUS_ACTIONS[body.status], "org", ref)
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


ROUTES: tuple[Route, ...] = (
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
        "POST",
        "/vendors/{ref}/rotate-keys",
        "Containment: revoke every key of the vendor's people and issue each a new one.",
        rotate_vendor_keys,
        None,
        schemas.VendorKeyRotation,
        201,
    ),
)
