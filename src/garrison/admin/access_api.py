"""Admin API: just-in-time access, two-person changes, and the organisation's policy set.

Asking for access is open to every authenticated principal (for themselves); approving is the
approver role's; a second security-admin approves sensitive changes proposed by a first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from garrison.admin import model_proposal, schemas
from garrison.admin.authz import Action, reach
from garrison.admin.base import FLAG_SCHEMA, Ctx, Refused, Route, query_flag
from garrison.domain import (
    AuthStyle,
    Level,
    PrincipalKind,
    Reason,
    Status,
    UpstreamApi,
    VendorStatus,
)
from garrison.domain.networks import parse_address
from garrison.domain.roles import Role
from garrison.errors import BadRequest, Forbidden, NotFound
from garrison.policy.context import call_context
from garrison.policy.engine import CompiledPolicies
from garrison.store import access, changes


def _may(ctx: Ctx, action: Action) -> bool:
    return reach(ctx.admin, action, ctx.scope).allowed


# ── access requests and grants ─────────────────────────────────────────────────────────────
async def request_access(ctx: Ctx) -> Any:
    body: schemas.AccessRequestCreate = ctx.body
    return await ctx.write(
        access.request_access,
        ctx.directory(),
        body.model,
        duration_s=body.duration_s,
        reason=body.reason,
        now=ctx.now,
    )


async def list_requests(ctx: Ctx) -> Any:
    mine = query_flag(ctx, "mine")
    everyone = _may(ctx, Action.READ_ACCESS) and not mine
    return await ctx.read(
        access.list_requests, ctx.now, principal_id=None if everyone else ctx.admin.id
    )


async def approve_request(ctx: Ctx) -> Any:
    from garrison.admin.identity_api import require_approver_credential

    requester = await ctx.read(access.requester_of, ctx.request.match_info["request_id"])
    if requester != ctx.admin.id:  # approving one's own request: refused by its own rule
        require_approver_credential(ctx, requester)
    from garrison.admin.identity_api import approver_directory

    return await ctx.write(
        access.approve, approver_directory(ctx), ctx.request.match_info["request_id"], now=ctx.now
    )


async def deny_request(ctx: Ctx) -> Any:
    body: schemas.ReasonBody = ctx.body
    return await ctx.write(
        access.deny,
        ctx.directory(),
        ctx.request.match_info["request_id"],
        reason=body.reason,
        now=ctx.now,
    )


async def cancel_request(ctx: Ctx) -> Any:
    return await ctx.write(
        access.cancel, ctx.directory(), ctx.request.match_info["request_id"], now=ctx.now
    )


async def list_grants(ctx: Ctx) -> Any:
    mine = query_flag(ctx, "mine")
    everyone = _may(ctx, Action.READ_ACCESS) and not mine
    return await ctx.read(
        access.list_grants, ctx.now, principal_id=None if everyone else ctx.admin.id
    )


async def revoke_grant(ctx: Ctx) -> Any:
    body: schemas.ReasonBody = ctx.body
    return await ctx.write(
        access.revoke_grant,
        ctx.directory(),
        ctx.request.match_info["grant_id"],
        reason=body.reason,
        now=ctx.now,
        allowed_all=_may(ctx, Action.REVOKE_GRANT),
    )


async def approvals(ctx: Ctx) -> Any:
    """What awaits the caller's decision: access requests (approvers) and two-person changes
    proposed by someone else (security-admins)."""
    requests: list[Any] = []
    pending: list[Any] = []
    if Role.APPROVER.value in ctx.admin.roles:
        requests = await ctx.read(access.awaiting, ctx.admin.id, ctx.now)
    if _may(ctx, Action.APPROVE_CHANGE):
        pending = [
            c
            for c in await ctx.read(changes.list_changes, ctx.now)
            if c["requested_by"] != ctx.admin.id
        ]
    return {"access_requests": requests, "changes": pending}


# ── two-person changes ─────────────────────────────────────────────────────────────────────
async def propose(ctx: Ctx, kind: str, target: str, payload: dict[str, Any], summary: str) -> Any:
    proposal = await ctx.write(
        changes.propose, ctx.directory(), kind, target, payload, summary, now=ctx.now
    )
    ctx.status = 202  # accepted: applied when a second admin approves
    return {"pending": proposal}


async def list_changes(ctx: Ctx) -> Any:
    everything = query_flag(ctx, "all")
    return await ctx.read(changes.list_changes, ctx.now, all_=everything)


async def approve_change(ctx: Ctx) -> Any:
    from garrison.admin.identity_api import require_approver_credential

    change_id = ctx.request.match_info["change_id"]
    row = await ctx.read(changes.pending, change_id, ctx.admin.id, ctx.now)
    require_approver_credential(ctx, row.requested_by)
    payload = changes.payload_of(row)
    from garrison.admin.identity_api import approver_directory

    directory = approver_directory(ctx, change_id=change_id, requested_by=row.requested_by)
    result: Any
    if row.kind in changes.AUTHORISING_KINDS:
        if row.target == ctx.admin.id:
            raise Refused(
                Reason.ADMIN_SELF,
                Forbidden("an admin cannot approve a change to themselves", rule="no-self-change"),
            )
        return await ctx.write(changes.approve_only, directory, change_id, now=ctx.now)
    if row.kind == "principal-access":
        if row.target == ctx.admin.id:
            raise Refused(
                Reason.ADMIN_SELF,
                Forbidden("an admin cannot approve a change to themselves", rule="no-self-change"),
            )
        level = payload.get("clearance")
        status = payload.get("status")
        result = await ctx.write(
            directory.update_principal,
            row.target,
            now=ctx.now,
            clearance=Level.parse(level) if level else None,
            compartments=payload.get("compartments"),
            roles=payload.get("roles"),
            status=Status(status) if status else None,
        )
    elif row.kind == "principal-create":
        result = await ctx.write(
            directory.create_principal,
            payload["name"],
            org=payload["org"],
            kind=PrincipalKind(payload["kind"]),
            clearance=Level.parse(payload["clearance"]),
            compartments=payload["compartments"],
            roles=payload["roles"],
            now=ctx.now,
            owner=payload.get("owner"),
        )
    elif row.kind == "model-update":
        level = payload.pop("level", None)
        api = payload.pop("api", None)
        style = payload.pop("auth_style", None)
        result = await ctx.write(
            directory.update_model,
            row.target,
            now=ctx.now,
            level=Level.parse(level) if level else None,
            api=UpstreamApi(api) if api else None,
            auth_style=AuthStyle(style) if style else None,
            **payload,
        )
    elif row.kind == model_proposal.KIND:
        result = await model_proposal.approve(ctx, directory, payload)
    elif row.kind == "policy-set":
        text = payload["text"]
        await asyncio.to_thread(CompiledPolicies, text)  # still valid against today's schema
        result = await ctx.write(
            changes.set_policy, directory, text, now=ctx.now, proposed_by=row.requested_by
        )
    elif row.kind == "vendor-restore":
        await ctx.write(
            directory.set_vendor_status,
            row.target,
            VendorStatus.ACTIVE,
            now=ctx.now,
            reason=f"restored by two admins: {payload.get('reason') or 'no reason given'}",
        )
        result = {"vendor": row.target, "status": VendorStatus.ACTIVE.value}
    else:  # pragma: no cover - kinds are written by this module only
        raise BadRequest(f"unknown change kind {row.kind!r}")
    if result == {}:
        await ctx.write(changes.close_unchanged, directory, change_id, now=ctx.now)
    return {"id": change_id, "status": "approved", "result": result}


async def deny_change(ctx: Ctx) -> Any:
    return await ctx.write(
        changes.deny, ctx.directory(), ctx.request.match_info["change_id"], now=ctx.now
    )


# ── the policy set ─────────────────────────────────────────────────────────────────────────
async def show_policy(ctx: Ctx) -> Any:
    current = await ctx.read(changes.current_policy)
    engine = ctx.state.policy
    return {**current, "in_force_version": engine.compiled.version if engine else None}


async def propose_policy(ctx: Ctx) -> Any:
    body: schemas.PolicyProposal = ctx.body
    compiled = await asyncio.to_thread(CompiledPolicies, body.text)  # refuses with Cedar's message
    lines = len(compiled.org_text.splitlines())
    return await propose(
        ctx,
        "policy-set",
        "policy",
        {"text": body.text},
        f"replace the organisation policy set ({lines} lines)",
    )


async def explain(ctx: Ctx) -> Any:
    """The decision a call by PRINCIPAL to MODEL would get, from ADDRESS at AT: the reasons
    and the policies that determined it (evaluated fresh, not from the cache)."""
    body: schemas.PolicyExplain = ctx.body
    snap = ctx.state.snapshot
    engine = ctx.state.policy
    if engine is None:
        raise BadRequest("no policy engine is loaded yet")
    principal = next(
        (p for p in snap.principals.values() if body.principal in (p.id, p.name)), None
    )
    model = next((m for m in snap.models.values() if body.model in (m.id, m.name)), None)
    if principal is None:
        raise NotFound(f"no principal {body.principal!r}", public_message="No such principal.")
    if model is None:
        raise NotFound(f"no model {body.model!r}", public_message="No such model.")
    address = None
    if body.address is not None:
        try:
            address = parse_address(body.address)
        except ValueError:
            raise BadRequest(f"address {body.address!r} is not an IP address") from None
    at = schemas.epoch(body.at) if body.at else ctx.now
    keys = [
        c
        for c in snap.credentials.values()
        if c.principal_id == principal.id
        and not c.revoked
        and (c.expires_at is None or c.expires_at > at)
    ]
    # The key that would let the call through if any would (a key bound elsewhere says no).
    credential = next(
        (c for c in keys if address is None or c.allows_address(address)),
        keys[0] if keys else None,
    )
    context = call_context(
        snap, principal, model, credential, address, at, justification=body.justification
    )
    decision = engine.evaluate(principal.id, model.id, context)
    return {
        "principal": principal.name,
        "model": model.name,
        "decision": "allow" if decision.allowed else "deny",
        "reasons": [r.value for r in decision.reasons],
        "policies": list(decision.policies),
        "errors": list(decision.errors),
        "context": context.as_cedar(),
        "credential": credential.id if credential else None,
        "policy_version": engine.compiled.version,
    }


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/access/requests",
        "Ask for time-boxed access to a critical model.",
        request_access,
        None,
        schemas.AccessRequestCreate,
        201,
        tag="access",
        open_to_all=True,
    ),
    Route(
        "GET",
        "/access/requests",
        "Access requests (your own unless you may read all).",
        list_requests,
        None,
        query=(("mine", "Only your own.", FLAG_SCHEMA),),
        tag="access",
        open_to_all=True,
    ),
    Route(
        "POST",
        "/access/requests/{request_id}/approve",
        "Approve (critical: two approvers, one internal, the vendor's sponsor for a vendor).",
        approve_request,
        Action.APPROVE_ACCESS,
        tag="access",
    ),
    Route(
        "POST",
        "/access/requests/{request_id}/deny",
        "Deny an access request.",
        deny_request,
        Action.APPROVE_ACCESS,
        schemas.ReasonBody,
        tag="access",
    ),
    Route(
        "POST",
        "/access/requests/{request_id}/cancel",
        "Withdraw your own request.",
        cancel_request,
        None,
        tag="access",
        open_to_all=True,
    ),
    Route(
        "GET",
        "/access/grants",
        "Grants (your own unless you may read all).",
        list_grants,
        None,
        query=(("mine", "Only your own.", FLAG_SCHEMA),),
        tag="access",
        open_to_all=True,
    ),
    Route(
        "POST",
        "/access/grants/{grant_id}/revoke",
        "End a grant now (your own, or any as an approver or security-admin).",
        revoke_grant,
        None,
        schemas.ReasonBody,
        tag="access",
        open_to_all=True,
    ),
    Route(
        "GET",
        "/approvals",
        "What awaits your decision: access requests and changes.",
        approvals,
        None,
        tag="access",
        open_to_all=True,
    ),
    Route(
        "GET",
        "/changes",
        "Two-person changes waiting for a second admin (all=true: every one).",
        list_changes,
        Action.READ_POLICY,
        query=(("all", "Include decided ones.", FLAG_SCHEMA),),
        tag="changes",
    ),
    Route(
        "POST",
        "/changes/{change_id}/approve",
        "Approve and apply a change proposed by another admin.",
        approve_change,
        Action.APPROVE_CHANGE,
        tag="changes",
    ),
    Route(
        "POST",
        "/changes/{change_id}/deny",
        "Refuse a proposed change.",
        deny_change,
        Action.APPROVE_CHANGE,
        tag="changes",
    ),
    Route(
        "GET",
        "/policy",
        "The organisation policy set in force.",
        show_policy,
        Action.READ_POLICY,
        tag="policy",
    ),
    Route(
        "POST",
        "/policy",
        "Propose a new organisation policy set (validated now; applied when "
        "a second admin approves).",
        propose_policy,
        Action.WRITE_POLICY,
        schemas.PolicyProposal,
        202,
        tag="policy",
    ),
    Route(
        "POST",
        "/policy/explain",
        "Explain the decision for a principal, model, address and time.",
        explain,
        Action.READ_POLICY,
        schemas.PolicyExplain,
        tag="policy",
    ),
)
