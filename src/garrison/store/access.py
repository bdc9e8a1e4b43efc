"""Just-in-time access: requests, approvals and grants (rules in ``garrison.domain.access``).

Every step is one transaction with its audit event. Grants never raise a clearance: a
request is refused unless the principal already dominates the model and its vendor's
ceiling allows it — a grant only satisfies the extra requirement of critical models.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import EventName
from garrison.audit.payload_base import Payload
from garrison.audit.payloads_access import (
    AccessApproved,
    AccessCancelled,
    AccessDenied,
    AccessExpired,
    AccessGranted,
    AccessRequested,
    GrantRevoked,
)
from garrison.domain import Level, OrgKind, Status
from garrison.domain.access import (
    ACCESS_REQUEST_TTL_S,
    CRITICAL_APPROVALS,
    GRANT_MAX_DURATION_S,
    AccessStatus,
    Approver,
    approvals_satisfied,
    check_access_transition,
)
from garrison.domain.roles import Role
from garrison.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.store import journal, schema, vendors
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import lookup, new_id
from garrison.store.snapshot import parse_compartments

# Why access is needed: a sentence and a ticket reference.
ACCESS_REASON_MAX_CHARS = 500

ar, gr, p, m = schema.access_requests, schema.grants, schema.principals, schema.models


def _text(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise BadRequest(f"a {what} is required")
    if len(value) > ACCESS_REASON_MAX_CHARS:
        raise BadRequest(f"{what} is longer than {ACCESS_REASON_MAX_CHARS} characters")
    return value


# Only grants change what the gateway enforces; requests and their decisions do not.
_FEEDS = frozenset({EventName.ACCESS_GRANTED, EventName.GRANT_REVOKED})


def _record(d: Journal, conn: sa.Connection, payload: Payload, now: float, **kw: Any) -> None:
    journal.record(
        conn,
        at=now,
        actor=d.actor,
        origin=d.origin,
        payload=payload,
        feed=payload.NAME in _FEEDS,
        **kw,
    )


def _request_row(conn: sa.Connection, request_id: str, now: float) -> Any:
    row = conn.execute(sa.select(ar).where(ar.c.id == request_id)).first()
    if row is None:
        raise NotFound(f"no access request {request_id!r}", public_message="No such request.")
    return row


def _lapse(d: Journal, conn: sa.Connection, row: Any, now: float) -> bool:
    """Mark a pending request past its time as expired; True if it was."""
    if row.status == AccessStatus.PENDING.value and now >= row.expires_at:
        conn.execute(
            sa.update(ar).where(ar.c.id == row.id).values(status=AccessStatus.EXPIRED.value)
        )
        _record(
            d,
            conn,
            AccessExpired(request_id=row.id),
            now,
            entity="access",
            entity_id=row.id,
            op="expire",
            principal_id=row.principal_id,
        )
        return True
    return False


def request_access(
    d: Journal, model_ref: str, *, duration_s: float, reason: str, now: float
) -> dict[str, Any]:
    """The acting principal (``d.actor``) asks for a critical model for ``duration_s``."""
    reason = _text(reason, "reason")
    with write_transaction(d.engine) as conn:
        who = lookup(conn, p, d.actor, "principal")
        if who.status != Status.ACTIVE.value:
            raise Forbidden("an inactive principal cannot ask for access")
        # One answer for a model that does not exist, needs no grant, or is beyond the
        # principal: asking must not reveal which models exist or at what level (no oracle).
        model = conn.execute(
            sa.select(m).where(sa.or_(m.c.id == model_ref, m.c.name == model_ref))
        ).first()
        level = Level(model.level) if model is not None else Level.PUBLIC
        comps = parse_compartments(model.compartments) if model is not None else frozenset()
        terms = vendors.vendor_of(conn, who.org_id)
        if (
            model is None
            or level not in GRANT_MAX_DURATION_S
            or Level(who.clearance) < level
            or not comps <= parse_compartments(who.compartments)
            or (terms is not None and not terms.ceiling_allows(level, comps))
        ):
            # The same words for every case, to everyone (the specifics would be an oracle).
            raise NotFound("No such model.", public_message="No such model.")
        longest = GRANT_MAX_DURATION_S[level]
        if not 0 < duration_s <= longest:
            raise BadRequest(
                f"a grant for a {level.label} model lasts at most {longest / 3600:g} hours"
            )
        open_request = conn.execute(
            sa.select(ar.c.id).where(
                ar.c.principal_id == who.id,
                ar.c.model_id == model.id,
                ar.c.status == AccessStatus.PENDING.value,
                ar.c.expires_at > now,
            )
        ).first()
        if open_request is not None:
            raise Conflict(f"a request for {model.name!r} is already pending ({open_request.id})")
        request_id = new_id("acr")
        values = {
            "id": request_id,
            "principal_id": who.id,
            "model_id": model.id,
            "duration_s": duration_s,
            "reason": reason,
            "status": AccessStatus.PENDING.value,
            "created_at": now,
            "expires_at": now + ACCESS_REQUEST_TTL_S,
            "approvals": "[]",
        }
        conn.execute(sa.insert(ar).values(**values))
        _record(
            d,
            conn,
            AccessRequested(
                request_id=request_id,
                model_id=model.id,
                duration_s=duration_s,
                reason=reason,
                approvals_needed=CRITICAL_APPROVALS,
            ),
            now,
            entity="access",
            entity_id=request_id,
            op="request",
            principal_id=who.id,
            model=model.name,
        )
    return {**values, "model": model.name, "approvals": []}


def _approver(conn: sa.Connection, actor: str) -> Any:
    row = conn.execute(sa.select(p).where(p.c.id == actor)).first()
    if row is None or row.status != Status.ACTIVE.value:
        raise Forbidden("only an active approver can decide access requests")
    if Role.APPROVER.value not in parse_compartments(row.roles):
        raise Forbidden("deciding access requests needs the approver role", rule="approver-role")
    return row


def requester_of(conn: sa.Connection, request_id: str) -> str | None:
    """Who asked for access request ``request_id`` (None: no such request)."""
    value = conn.execute(sa.select(ar.c.principal_id).where(ar.c.id == request_id)).scalar()
    return None if value is None else str(value)


def approve(d: Journal, request_id: str, *, now: float) -> dict[str, Any]:
    """Add the acting approver's approval; grant access once the rules are met."""
    with write_transaction(d.engine) as conn:
        row = _request_row(conn, request_id, now)
        approver = _approver(conn, d.actor)
        if approver.id == row.principal_id:
            raise Forbidden("nobody approves their own request", rule="no-self-approval")
        if _lapse(d, conn, row, now):
            return {"id": row.id, "status": AccessStatus.EXPIRED.value}
        check_access_transition(AccessStatus(row.status), AccessStatus.APPROVED)
        approvals: list[str] = orjson.loads(row.approvals)
        if approver.id in approvals:
            raise Conflict("you have already approved this request", rule="distinct-approvers")
        approvals.append(approver.id)
        people = {
            r.id: r
            for r in conn.execute(
                sa.select(p.c.id, p.c.org_id).where(p.c.id.in_([*approvals, row.principal_id]))
            )
        }
        org_kinds = {
            r.id: r.kind for r in conn.execute(sa.select(schema.orgs.c.id, schema.orgs.c.kind))
        }
        requester_org = people[row.principal_id].org_id
        terms = vendors.vendor_of(conn, requester_org)
        sponsor = terms.sponsor_id if terms is not None else None
        listed = [
            Approver(a, org_kinds.get(people[a].org_id) == OrgKind.INTERNAL.value)
            for a in approvals
            if a in people
        ]
        done = approvals_satisfied(listed, vendor_sponsor=sponsor)
        values: dict[str, Any] = {"approvals": orjson.dumps(approvals).decode()}
        grant_id = None
        if done:
            values.update(status=AccessStatus.APPROVED.value, decided_at=now, decided_by=d.actor)
        conn.execute(sa.update(ar).where(ar.c.id == row.id).values(**values))
        model_name = conn.execute(sa.select(m.c.name).where(m.c.id == row.model_id)).scalar()
        _record(
            d,
            conn,
            AccessApproved(request_id=row.id, approvals=approvals, complete=done),
            now,
            entity="access",
            entity_id=row.id,
            op="approve",
            principal_id=row.principal_id,
            model=model_name,
        )
        if done:
            grant_id = new_id("gnt")
            expires_at = now + row.duration_s
            conn.execute(
                sa.insert(gr).values(
                    id=grant_id,
                    request_id=row.id,
                    principal_id=row.principal_id,
                    model_id=row.model_id,
                    starts_at=now,
                    expires_at=expires_at,
                )
            )
            _record(
                d,
                conn,
                AccessGranted(
                    grant_id=grant_id,
                    request_id=row.id,
                    expires_at=expires_at,
                    approvals=approvals,
                ),
                now,
                entity="grant",
                entity_id=grant_id,
                op="grant",
                principal_id=row.principal_id,
                model=model_name,
            )
    return {
        "id": row.id,
        "status": AccessStatus.APPROVED.value if done else AccessStatus.PENDING.value,
        "approvals": approvals,
        "grant_id": grant_id,
    }


def deny(d: Journal, request_id: str, *, reason: str, now: float) -> dict[str, Any]:
    reason = _text(reason, "reason")
    with write_transaction(d.engine) as conn:
        row = _request_row(conn, request_id, now)
        approver = _approver(conn, d.actor)
        if approver.id == row.principal_id:
            raise Forbidden("nobody decides their own request", rule="no-self-approval")
        if _lapse(d, conn, row, now):
            return {"id": row.id, "status": AccessStatus.EXPIRED.value}
        check_access_transition(AccessStatus(row.status), AccessStatus.DENIED)
        conn.execute(
            sa.update(ar)
            .where(ar.c.id == row.id)
            .values(
                status=AccessStatus.DENIED.value,
                decided_at=now,
                decided_by=d.actor,
                decision_reason=reason,
            )
        )
        _record(
            d,
            conn,
            AccessDenied(request_id=row.id, reason=reason),
            now,
            entity="access",
            entity_id=row.id,
            op="deny",
            principal_id=row.principal_id,
        )
    return {"id": row.id, "status": AccessStatus.DENIED.value}


def cancel(d: Journal, request_id: str, *, now: float) -> dict[str, Any]:
    with write_transaction(d.engine) as conn:
        row = _request_row(conn, request_id, now)
        if row.principal_id != d.actor:
            raise NotFound(f"no access request {request_id!r}", public_message="No such request.")
        if _lapse(d, conn, row, now):
            return {"id": row.id, "status": AccessStatus.EXPIRED.value}
        check_access_transition(AccessStatus(row.status), AccessStatus.CANCELLED)
        conn.execute(
            sa.update(ar)
            .where(ar.c.id == row.id)
            .values(status=AccessStatus.CANCELLED.value, decided_at=now, decided_by=d.actor)
        )
        _record(
            d,
            conn,
            AccessCancelled(request_id=row.id),
            now,
            entity="access",
            entity_id=row.id,
            op="cancel",
            principal_id=row.principal_id,
        )
    return {"id": row.id, "status": AccessStatus.CANCELLED.value}


def revoke_grant(
    d: Journal, grant_id: str, *, reason: str, now: float, allowed_all: bool
) -> dict[str, Any]:
    """End a grant now. ``allowed_all``: the actor may revoke anyone's (else only their own)."""
    reason = _text(reason, "reason")
    with write_transaction(d.engine) as conn:
        row = conn.execute(sa.select(gr).where(gr.c.id == grant_id)).first()
        if row is None or (not allowed_all and row.principal_id != d.actor):
            raise NotFound(f"no grant {grant_id!r}", public_message="No such grant.")
        if row.revoked_at is not None or row.expires_at <= now:
            raise Conflict(f"grant {grant_id} has already ended")
        conn.execute(
            sa.update(gr).where(gr.c.id == grant_id).values(revoked_at=now, revoked_by=d.actor)
        )
        _record(
            d,
            conn,
            GrantRevoked(grant_id=grant_id, reason=reason),
            now,
            entity="grant",
            entity_id=grant_id,
            op="revoke",
            principal_id=row.principal_id,
        )
    return {"id": grant_id, "status": "revoked"}


def _status(row: Any, now: float) -> str:
    if row.status == AccessStatus.PENDING.value and now >= row.expires_at:
        return AccessStatus.EXPIRED.value
    return str(row.status)


def list_requests(
    conn: sa.Connection, now: float, *, principal_id: str | None = None
) -> list[dict[str, Any]]:
    stmt = (
        sa.select(ar, p.c.name.label("principal"), m.c.name.label("model"))
        .join(p, p.c.id == ar.c.principal_id)
        .join(m, m.c.id == ar.c.model_id)
        .order_by(ar.c.created_at.desc())
    )
    if principal_id is not None:
        stmt = stmt.where(ar.c.principal_id == principal_id)
    return [
        {
            "id": r.id,
            "principal": r.principal,
            "principal_id": r.principal_id,
            "model": r.model,
            "duration_s": r.duration_s,
            "reason": r.reason,
            "status": _status(r, now),
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "approvals": orjson.loads(r.approvals),
            "decided_by": r.decided_by,
            "decision_reason": r.decision_reason,
        }
        for r in conn.execute(stmt)
    ]


def awaiting(conn: sa.Connection, approver_id: str, now: float) -> list[dict[str, Any]]:
    """Pending requests this approver may still approve (not their own, not approved yet)."""
    return [
        r
        for r in list_requests(conn, now)
        if r["status"] == AccessStatus.PENDING.value
        and r["principal_id"] != approver_id
        and approver_id not in r["approvals"]
    ]


def list_grants(
    conn: sa.Connection, now: float, *, principal_id: str | None = None
) -> list[dict[str, Any]]:
    stmt = (
        sa.select(gr, p.c.name.label("principal"), m.c.name.label("model"))
        .join(p, p.c.id == gr.c.principal_id)
        .join(m, m.c.id == gr.c.model_id)
        .order_by(gr.c.starts_at.desc())
    )
    if principal_id is not None:
        stmt = stmt.where(gr.c.principal_id == principal_id)
    out = []
    for r in conn.execute(stmt):
        if r.revoked_at is not None:
            state = "revoked"
        elif r.expires_at <= now:
            state = "expired"
        else:
            state = "active"
        out.append(
            {
                "id": r.id,
                "principal": r.principal,
                "principal_id": r.principal_id,
                "model": r.model,
                "request_id": r.request_id,
                "starts_at": r.starts_at,
                "expires_at": r.expires_at,
                "state": state,
                "revoked_by": r.revoked_by,
            }
        )
    return out
