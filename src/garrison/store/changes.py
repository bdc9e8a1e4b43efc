"""Two-person changes: a sensitive admin change is proposed by one admin and applied only
when a second, different admin approves it.

Sensitive: raising a clearance, adding a compartment to a principal, lowering a model's level
or removing its compartments, re-pointing a model or changing its ``auth_style``, adding a
model at ``restricted`` or above or on the server of a better-protected model
(``store.model_origin``), changing the organisation's policy set. (Lifting a global
lockdown follows the same rule in ``store.locks``.) A proposal lapses after
``CHANGE_TTL_S``. Approving applies the change through the directory with the approver as
actor; the change's row is marked approved inside that same transaction (see
``store.journal.record``), so a change is never applied without its approval or vice versa.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.payloads_admin import (
    AdminUnchanged,
    ChangeApproved,
    ChangeDenied,
    ChangeProposed,
    PolicyChanged,
)
from garrison.domain.two_person import MODEL_ROUTING_FIELDS as MODEL_ROUTING_FIELDS
from garrison.domain.two_person import model_change_is_sensitive as model_change_is_sensitive
from garrison.domain.two_person import new_principal_is_sensitive as new_principal_is_sensitive
from garrison.domain.two_person import (
    principal_change_is_sensitive as principal_change_is_sensitive,
)
from garrison.errors import Conflict, Forbidden, NotFound
from garrison.keyring import Sealer
from garrison.store import journal, schema
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.journal import mark_applied as mark_applied
from garrison.store.rows import new_id

# A proposal waits this long for a second admin.
CHANGE_TTL_S = 24 * 3600.0

pc = schema.pending_changes


def propose(
    d: Journal, kind: str, target: str, payload: dict[str, Any], summary: str, *, now: float
) -> dict[str, Any]:
    change_id = new_id("chg")
    values = {
        "id": change_id,
        "kind": kind,
        "target": target,
        "payload": orjson.dumps(payload).decode(),
        "summary": summary[:500],
        "requested_by": d.actor,
        "requested_at": now,
        "expires_at": now + CHANGE_TTL_S,
        "status": "pending",
    }
    with write_transaction(d.engine) as conn:
        conn.execute(sa.insert(pc).values(**values))
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=ChangeProposed(change_id=change_id, kind=kind, target=target, summary=summary),
            feed=False,
            entity="change",
            entity_id=change_id,
            op="propose",
        )
    return {k: v for k, v in values.items() if k != "payload"}


def pending(conn: sa.Connection, change_id: str, approver: str, now: float) -> Any:
    """The pending change ``approver`` may approve now, or a clear refusal."""
    row = conn.execute(sa.select(pc).where(pc.c.id == change_id)).first()
    if row is None:
        raise NotFound(f"no change {change_id!r}", public_message=f"No change {change_id!r}.")
    if row.status != "pending":
        raise Conflict(f"change {change_id} is {row.status}")
    if now >= row.expires_at:
        raise Conflict(f"change {change_id} lapsed unapproved")
    if row.requested_by == approver:
        raise Forbidden("a second, different admin must approve this change", rule="two-person")
    return row


def payload_of(row: Any) -> dict[str, Any]:
    value = orjson.loads(row.payload)
    assert isinstance(value, dict)
    return value


def deny(d: Journal, change_id: str, *, now: float) -> dict[str, Any]:
    with write_transaction(d.engine) as conn:
        row = conn.execute(sa.select(pc).where(pc.c.id == change_id)).first()
        if row is None:
            raise NotFound(f"no change {change_id!r}", public_message=f"No change {change_id!r}.")
        if row.status != "pending":
            raise Conflict(f"change {change_id} is {row.status}")
        conn.execute(
            sa.update(pc)
            .where(pc.c.id == change_id)
            .values(status="denied", decided_by=d.actor, decided_at=now)
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=ChangeDenied(change_id=change_id, kind=row.kind, target=row.target),
            feed=False,
            entity="change",
            entity_id=change_id,
            op="deny",
        )
    return {"id": change_id, "status": "denied"}


def list_changes(conn: sa.Connection, now: float, *, all_: bool = False) -> list[dict[str, Any]]:
    stmt = sa.select(pc).order_by(pc.c.requested_at.desc())
    out = []
    for r in conn.execute(stmt):
        status = r.status
        if status == "pending" and now >= r.expires_at:
            status = "lapsed"
        if not all_ and status != "pending":
            continue
        out.append(
            {
                "id": r.id,
                "kind": r.kind,
                "target": r.target,
                "summary": r.summary,
                "status": status,
                "requested_by": r.requested_by,
                "requested_at": r.requested_at,
                "expires_at": r.expires_at,
                "decided_by": r.decided_by,
                "decided_at": r.decided_at,
            }
        )
    return out


def set_policy(d: Journal, text: str, *, now: float, proposed_by: str) -> int:
    """Store a (validated) organisation policy set as the one in force."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    with write_transaction(d.engine) as conn:
        version = conn.execute(
            sa.insert(schema.policy_sets).values(
                text=text,
                digest=digest,
                created_at=now,
                proposed_by=proposed_by,
                approved_by=d.actor,
            )
        ).inserted_primary_key
        number = int(version[0]) if version else 0
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=PolicyChanged(
                version=number, sha256=digest, size=len(text.encode()), proposed_by=proposed_by
            ),
            entity="policy",
            entity_id=str(number),
            op="set",
        )
    return number


def current_policy(conn: sa.Connection) -> dict[str, Any]:
    ps = schema.policy_sets
    row = conn.execute(sa.select(ps).order_by(ps.c.version.desc()).limit(1)).first()
    if row is None:
        return {"version": 0, "text": "", "sha256": hashlib.sha256(b"").hexdigest()}
    return {
        "version": row.version,
        "text": row.text,
        "sha256": row.digest,
        "created_at": row.created_at,
        "proposed_by": row.proposed_by,
        "approved_by": row.approved_by,
    }


def close_unchanged(d: Journal, change_id: str, *, now: float) -> dict[str, Any]:
    """Approve a change whose application found nothing left to change."""
    with write_transaction(d.engine) as conn:
        mark_applied(conn, change_id, actor=d.actor, at=now)
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=None,
            payload=AdminUnchanged(change_id=change_id, note="approved; nothing left to change"),
            feed=False,
            entity="change",
            entity_id=change_id,
            op="approve",
        )
    return {"id": change_id, "status": "approved"}


# A proposal's payload field holding a sealed upstream credential (see admin.model_proposal).
SEALED_KEY_FIELD = "upstream_key_sealed"


def reseal_pending(conn: sa.Connection, sealer: Sealer) -> int:
    """Re-encrypt the sealed credentials of pending proposals under ``sealer``'s newest key."""
    count = 0
    rows = conn.execute(sa.select(pc.c.id, pc.c.payload).where(pc.c.status == "pending")).all()
    for row in rows:
        payload = orjson.loads(row.payload)
        sealed = payload.get(SEALED_KEY_FIELD)
        if not isinstance(sealed, str):
            continue
        payload[SEALED_KEY_FIELD] = sealer.rotate(sealed.encode("ascii")).decode("ascii")
        conn.execute(
            sa.update(pc).where(pc.c.id == row.id).values(payload=orjson.dumps(payload).decode())
        )
        count += 1
    return count


# Kinds whose approval authorises one later step by the proposer (issuing an enrollment
# code, a service-account key): approving marks them approved; the step marks them used.
AUTHORISING_KINDS = ("principal-invite", "service-key")


def approve_only(d: Journal, change_id: str, *, now: float) -> dict[str, Any]:
    with write_transaction(d.engine) as conn:
        row = pending(conn, change_id, d.actor, now)
        mark_applied(conn, change_id, actor=d.actor, at=now)
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=None,
            payload=ChangeApproved(change_id=change_id, kind=row.kind, target=row.target),
            feed=False,
            entity="change",
            entity_id=change_id,
            op="approve",
        )
    return {"id": change_id, "status": "approved", "for": row.requested_by}


def approved_unused(
    conn: sa.Connection, kinds: tuple[str, ...], targets: tuple[str, ...], by: str, now: float
) -> str | None:
    """An approved change of ``kinds`` on one of ``targets``, proposed by ``by``, still
    fresh and not yet used: the authority for one step (None when there is none)."""
    value = conn.execute(
        sa.select(pc.c.id)
        .where(
            pc.c.kind.in_(kinds),
            pc.c.target.in_(targets),
            pc.c.requested_by == by,
            pc.c.status == "approved",
            pc.c.decided_at >= now - CHANGE_TTL_S,
        )
        .order_by(pc.c.decided_at.desc())
        .limit(1)
    ).scalar()
    return None if value is None else str(value)


def mark_used(conn: sa.Connection, change_id: str) -> None:
    """Spend an approved change (once): in the transaction of the step it authorised."""
    done = conn.execute(
        sa.update(pc).where(pc.c.id == change_id, pc.c.status == "approved").values(status="used")
    ).rowcount
    if not done:
        raise Conflict(f"change {change_id} was already used")
