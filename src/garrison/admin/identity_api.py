"""Admin API: who may hold which credential (issue 12).

* A person's key is made by that person only: by redeeming an enrollment code
  (``POST /enroll``, unauthenticated, rate-limited: ``enroll_api``) or, with a key of their
  own, through ``POST /keys/self``. An admin who asks ``POST /keys`` for a person is refused
  (``identity.key_for_person``); an admin who rotates a person's key revokes it at once and
  gets a new enrollment code for them, never a secret.
* Admins (and vendor-managers) make keys for service accounts only; a service account above
  the issuer's own clearance or compartments takes a second admin.
* Inviting a person who will hold a role, a clearance above internal or a compartment takes
  a second admin: the inviter proposes, a second admin approves, and the inviter's next
  ``POST /principals/{ref}/invite`` issues the code (the approval of the person's creation
  counts, once).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from garrison.admin import canary_guard, schemas
from garrison.admin.authz import Action
from garrison.admin.base import Ctx, Refused, Route
from garrison.domain import Level, PrincipalKind, Reason
from garrison.domain.provenance import Provenance, is_own
from garrison.errors import (
    BadRequest,
    Forbidden,
)
from garrison.store import Directory, enrollment, queries, schema
from garrison.store import changes as changes_rules
from garrison.store.directory import check_networks
from garrison.store.snapshot import parse_compartments


def issued(created: Any, provenance: Provenance) -> dict[str, Any]:
    return {
        "id": created.key.key_id,
        # Shown once, in this response; only an HMAC of it is kept.
        "key": created.key.token.reveal(),
        "principal_id": created.principal_id,
        "expires_at": created.expires_at,
        "provenance": provenance.value,
    }


def issued_any(item: Any) -> dict[str, Any]:
    """A rotation's result: a service account's key, or a person's enrollment code."""
    if isinstance(item, enrollment.Invitation):
        return item.public()
    return issued(item, Provenance.SERVICE)


def require_own(ctx: Ctx) -> None:
    """Self-service (making, rotating one's keys; approving) needs a key of one's own."""
    if ctx.credential is None or not is_own(ctx.credential, ctx.admin):
        raise Refused(
            Reason.NOT_OWN_CREDENTIAL,
            Forbidden(
                "this needs a key you made yourself (enrolled or self); "
                f"this key's provenance is {ctx.credential.provenance if ctx.credential else '-'}"
                " — ask an admin to invite you again (`garrison user invite`) and enroll",
                rule="own-credential",
            ),
        )


def require_fresh_sign_in(ctx: Ctx) -> None:
    """A call made with a sign-in session needs a fresh MFA sign-in (``identity.step_up``).
    A key carries no MFA: it passes only where nobody can sign in with MFA (no OIDC
    configured), or when it is a break-glass key (for when the provider is gone; it cannot
    approve anything anyway). Otherwise a stolen key file would step around step-up."""
    from garrison.domain.provenance import Provenance
    from garrison.identity.step_up import StepUpRequired, step_up_needed

    why = step_up_needed(ctx.session, now=ctx.now)
    if (
        why is None
        and ctx.session is None
        and ctx.backend.signin is not None
        and (ctx.credential is None or ctx.credential.provenance != Provenance.BREAK_GLASS)
    ):
        why = "a key carries no MFA, and this gateway signs people in through their provider"
    if why is not None:
        raise Refused(Reason.STEP_UP_REQUIRED, StepUpRequired(why))


def require_approver_credential(ctx: Ctx, requester: str | None) -> None:
    """An approval counts only from the approver's own key, never one the requester made;
    one made with a sign-in session needs a fresh MFA sign-in (``identity.step_up``)."""
    from garrison.domain.provenance import approval_refusal

    if ctx.session is not None:
        # A sign-in session is the person's own by construction (their provider account,
        # their key on their machine); it approves only with a fresh MFA sign-in.
        require_fresh_sign_in(ctx)
        return

    reason = approval_refusal(ctx.credential, ctx.admin, requester)
    if reason is not None:
        provenance = ctx.credential.provenance if ctx.credential else "-"
        raise Refused(
            reason,
            Forbidden(
                "approvals are taken only from a person's own key "
                f"(enrolled or self, made by them); this key's provenance is {provenance}",
                rule="own-credential",
            ),
        )
    require_fresh_sign_in(ctx)  # with OIDC configured, an approval needs a fresh MFA session


def approver_directory(ctx: Ctx, **more: Any) -> Directory:
    """The directory an approval writes through: its events name the approver's key and
    that key's provenance (the record of whose word it was)."""
    directory = ctx.directory()
    provenance = ctx.credential.provenance if ctx.credential else None
    if ctx.session is not None:
        provenance = "session"  # a sign-in through the provider, fresh MFA checked
    directory.origin = {**(directory.origin or {}), **more, "credential_provenance": provenance}
    return directory


def exceeds(admin: Any, target: Any) -> bool:
    return Level(target.clearance) > admin.clearance or bool(
        parse_compartments(target.compartments) - admin.compartments
    )


# ── keys ───────────────────────────────────────────────────────────────────────────────────
async def create_key(ctx: Ctx) -> Any:
    body: schemas.KeyCreate = ctx.body
    await ctx.require(Action.CREATE_KEY, "principal", body.principal)
    if body.canary:
        await ctx.require(Action.CREATE_CANARY)
    check_networks(body.networks)  # a malformed request is told so first
    target = await ctx.read(_principal_row, body.principal)
    if target.kind != PrincipalKind.SERVICE.value:
        raise Refused(
            Reason.KEY_FOR_PERSON,
            Forbidden(
                f"{target.name!r} is a person; a person's key is made "
                "only by that person — invite them (`garrison user invite "
                f"{target.name}`) and they enroll; admins make keys for service accounts only",
                rule="own-credential",
            ),
        )
    change_id = None
    if exceeds(ctx.admin, target):
        change_id = await ctx.read(
            changes_rules.approved_unused, ("service-key",), (target.id,), ctx.admin.id, ctx.now
        )
        if change_id is None:
            from garrison.admin import access_api

            return await access_api.propose(
                ctx,
                "service-key",
                target.id,
                {"principal": target.id},
                f"a key for service account {target.name} ({Level(target.clearance).label} "
                f"{sorted(parse_compartments(target.compartments))}), above the issuer's own "
                "clearance; once approved, the proposer creates it",
            )
    created = await ctx.write(
        ctx.directory().create_key,
        target.id,
        now=ctx.now,
        expires_in=body.expires_in_s,
        networks=body.networks,
        note=body.note,
        canary=body.canary,
        provenance=Provenance.SERVICE,
        change_id=change_id,
        cert_thumbprint=body.cert_thumbprint,
    )
    bound = {"cert_thumbprint": body.cert_thumbprint} if body.cert_thumbprint else {}
    return issued(created, Provenance.SERVICE) | bound


async def create_own_key(ctx: Ctx) -> Any:
    body: schemas.KeyCreateSelf = ctx.body
    require_own(ctx)
    created = await ctx.write(
        ctx.directory().create_key,
        ctx.admin.id,
        now=ctx.now,
        expires_in=body.expires_in_s,
        networks=body.networks,
        note=body.note,
        provenance=Provenance.SELF,
        created_by=ctx.admin.id,
    )
    return issued(created, Provenance.SELF)


def _principal_row(conn: sa.Connection, ref: str) -> Any:
    p = schema.principals
    row = conn.execute(sa.select(p).where(sa.or_(p.c.id == ref, p.c.name == ref))).first()
    if row is None:
        raise BadRequest(f"principal {ref!r} does not exist")
    return row


def _key_holder(conn: sa.Connection, key_id: str) -> Any:
    c, p = schema.credentials, schema.principals
    return conn.execute(
        sa.select(p.c.id, p.c.kind).join(c, c.c.principal_id == p.c.id).where(c.c.id == key_id)
    ).first()


async def revoke_key(ctx: Ctx) -> Any:
    body: schemas.KeyRevoke = ctx.body
    key_id = ctx.request.match_info["key_id"]
    holder = await ctx.read(_key_holder, key_id)
    canary = False
    if holder is None or holder.id != ctx.admin.id:
        await ctx.require(Action.REVOKE_KEY, "credential", key_id)
        canary = await canary_guard.guard(ctx, key_id, "revoke")
    await ctx.write(ctx.directory().revoke_key, key_id, now=ctx.now, reason=body.reason)
    if canary:
        await canary_guard.raise_alert(ctx, key_id, "revoke", "done")
    return {"id": key_id, "state": "revoked"}


async def rotate_key(ctx: Ctx) -> Any:
    body: schemas.KeyRotate = ctx.body
    key_id = ctx.request.match_info["key_id"]
    holder = await ctx.read(_key_holder, key_id)
    rotate = ctx.directory().rotate_key
    if holder is not None and holder.id == ctx.admin.id:
        require_own(ctx)
        created = await ctx.write(
            rotate,
            key_id,
            now=ctx.now,
            grace_s=body.grace_s,
            reason=body.reason,
            provenance=Provenance.SELF,
        )
        return {
            **issued(created, Provenance.SELF),
            "rotated_from": key_id,
            "grace_s": body.grace_s,
        }
    await ctx.require(Action.ROTATE_KEY, "credential", key_id)
    canary = await canary_guard.guard(ctx, key_id, "rotate")
    if holder is not None and holder.kind == PrincipalKind.HUMAN.value:
        invitation = await ctx.write(
            enrollment.rotate_person_key,
            ctx.directory(),
            key_id,
            now=ctx.now,
            reason=body.reason,
            grace_s=body.grace_s,
        )
        if canary:
            await canary_guard.raise_alert(ctx, key_id, "rotate", "done")
        ctx.status = 200
        if invitation is None:
            return {
                "rotated_from": key_id,
                "state": "revoked",
                "invite": "this person needs a second admin's approval for a new code: "
                "`garrison user invite` proposes it",
            }
        return {"rotated_from": key_id, "state": "revoked", **invitation.public()}
    change_id = None
    target = None if holder is None else await ctx.read(_principal_row, holder.id)
    if target is not None and exceeds(ctx.admin, target):
        # A successor is a new key: above the issuer's own reach it takes a second admin,
        # exactly like creating one (else a rotation mints what creation refuses).
        change_id = await ctx.read(
            changes_rules.approved_unused, ("service-key",), (target.id,), ctx.admin.id, ctx.now
        )
        if change_id is None:
            from garrison.admin import access_api

            return await access_api.propose(
                ctx,
                "service-key",
                target.id,
                {"principal": target.id, "rotate": key_id},
                f"rotate key {key_id} of service account {target.name} "
                f"({Level(target.clearance).label} "
                f"{sorted(parse_compartments(target.compartments))}), above the issuer's own "
                "clearance; once approved, the proposer rotates it",
            )
    created = await ctx.write(
        rotate,
        key_id,
        now=ctx.now,
        grace_s=body.grace_s,
        reason=body.reason,
        provenance=Provenance.SERVICE,
        change_id=change_id,
    )
    if canary:
        await canary_guard.raise_alert(ctx, key_id, "rotate", "done")
    return {**issued(created, Provenance.SERVICE), "rotated_from": key_id, "grace_s": body.grace_s}


async def keys_audit(ctx: Ctx) -> Any:
    """Live keys of people that someone else made (legacy and break-glass): rotate them."""
    return await ctx.read(enrollment.keys_made_for_others, ctx.now, ctx.reads_over())


# ── invitations ────────────────────────────────────────────────────────────────────────────
async def invite_principal(ctx: Ctx, target: Any) -> Any:
    if target.id == ctx.admin.id:
        raise Refused(
            Reason.ADMIN_SELF,
            Forbidden(
                "another admin invites you (a code for yourself "
                "would turn any key you hold into one of your own)",
                rule="no-self-invite",
            ),
        )
    change_id = None
    sensitive = changes_rules.new_principal_is_sensitive(
        Level(target.clearance),
        parse_compartments(target.compartments),
        parse_compartments(target.roles),
    )
    if sensitive:
        change_id = await ctx.read(
            changes_rules.approved_unused,
            ("principal-invite", "principal-create"),
            (target.id, target.name),
            ctx.admin.id,
            ctx.now,
        )
        if change_id is None:
            from garrison.admin import access_api

            return await access_api.propose(
                ctx,
                "principal-invite",
                target.id,
                {"principal": target.id},
                f"invite {target.name} ({Level(target.clearance).label} "
                f"{sorted(parse_compartments(target.compartments))} "
                f"{sorted(parse_compartments(target.roles))}); once approved, the proposer "
                "gets the enrollment code",
            )
    invitation = await ctx.write(
        enrollment.invite, ctx.directory(), target.id, now=ctx.now, change_id=change_id
    )
    ctx.status = 201
    return invitation.public()


async def invite(ctx: Ctx) -> Any:
    ref = ctx.request.match_info["ref"]
    await ctx.require(Action.CREATE_PRINCIPAL, "principal", ref)
    target = await ctx.read(queries.find, queries.p, ref, "principal")
    return await invite_principal(ctx, target)


def _whoami_extra(conn: sa.Connection, principal_id: str) -> dict[str, Any]:
    p = schema.principals
    row = conn.execute(sa.select(p.c.invited_by).where(p.c.id == principal_id)).first()
    invited_by = row.invited_by if row is not None else None
    name = None
    if invited_by is not None:
        name = conn.execute(sa.select(p.c.name).where(p.c.id == invited_by)).scalar()
    return {"invited_by": invited_by, "invited_by_name": name or invited_by}


async def whoami_extra(ctx: Ctx) -> dict[str, Any]:
    extra = await ctx.read(_whoami_extra, ctx.admin.id)
    cred = ctx.credential
    return {
        **extra,
        "credential_provenance": cred.provenance if cred else None,
        "credential_created_by": cred.created_by if cred else None,
    }


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/keys/self",
        "Create a key for yourself (needs a key you made: enrolled or self).",
        create_own_key,
        None,
        schemas.KeyCreateSelf,
        201,
        open_to_all=True,
    ),
    Route(
        "GET",
        "/keys/audit",
        "Live keys of people that someone else made (legacy, break-glass): rotate them.",
        keys_audit,
        Action.READ,
    ),
    Route(
        "POST",
        "/principals/{ref}/invite",
        "Issue a one-time enrollment code for a person (shown once; a second admin first "
        "approves inviting anyone with a role, compartment or clearance above internal).",
        invite,
        Action.CREATE_PRINCIPAL,
        None,
        201,
    ),
)
