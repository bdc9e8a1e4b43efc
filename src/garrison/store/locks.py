"""Placing and lifting locks. Each is one transaction with its change-feed row (so every
gateway process swaps in a snapshot holding it) and its audit event.

Lifting a global lockdown takes two admins: the first records a lift request, a second,
different admin confirms it (a request older than ``LIFT_REQUEST_TTL_S`` no longer counts).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads_respond import LockCreated, LockLifted, LockLiftRequested
from garrison.domain.locks import LockKind
from garrison.domain.networks import parse_network
from garrison.errors import BadRequest, Conflict, NotFound
from garrison.store import journal, schema
from garrison.store.db import write_transaction
from garrison.store.identity_links import session_owner
from garrison.store.journal import Journal
from garrison.store.rows import new_id

# Free text explaining a lock or its lifting: a sentence and a ticket reference.
LOCK_REASON_MAX_CHARS = 500
# A lock with a time to live ends by itself at most this far ahead; longer means "until
# lifted", which is what a lock without a TTL already is.
LOCK_TTL_MAX_S = 365 * 86400
# A first admin's request to lift a global lockdown waits this long for a second admin.
LIFT_REQUEST_TTL_S = 3600.0

_TARGETS: dict[LockKind, tuple[sa.Table, str]] = {
    LockKind.CREDENTIAL: (schema.credentials, "key"),
    LockKind.PRINCIPAL: (schema.principals, "principal"),
    LockKind.VENDOR: (schema.orgs, "org"),
    LockKind.MODEL: (schema.models, "model"),
}


def _reason(text: str, what: str = "reason") -> str:
    text = text.strip()
    if not text:
        raise BadRequest(f"a {what} is required")
    if len(text) > LOCK_REASON_MAX_CHARS:
        raise BadRequest(f"{what} is longer than {LOCK_REASON_MAX_CHARS} characters")
    return text


def resolve_target(conn: sa.Connection, kind: LockKind, ref: str) -> tuple[str, str]:
    """The stored target (an id, a CIDR or "*") and a readable name for it."""
    if kind is LockKind.ALL:
        return "*", "everything"
    if kind is LockKind.NETWORK:
        try:
            net = parse_network(ref, strict=False)
        except ValueError as exc:
            raise BadRequest(f"invalid network {ref!r}: {exc}") from None
        return str(net), str(net)
    table, what = _TARGETS[kind]
    if kind is LockKind.CREDENTIAL:
        row = conn.execute(sa.select(table.c.id).where(table.c.id == ref)).first()
        if row is None:
            # A sign-in session's id names a credential too: the lock cuts that session alone.
            if session_owner(conn, ref) is not None:
                return ref, ref
            raise BadRequest(f"key {ref!r} does not exist")
        return row.id, row.id
    row = conn.execute(
        sa.select(table.c.id, table.c.name).where(sa.or_(table.c.id == ref, table.c.name == ref))
    ).first()
    if row is None:
        raise BadRequest(f"{what} {ref!r} does not exist")
    return row.id, row.name


def _active_same(conn: sa.Connection, kind: LockKind, target: str, now: float) -> Any:
    lk = schema.locks
    return conn.execute(
        sa.select(lk.c.id).where(
            lk.c.kind == kind.value,
            lk.c.target == target,
            lk.c.lifted_at.is_(None),
            sa.or_(lk.c.expires_at.is_(None), lk.c.expires_at > now),
        )
    ).first()


def create_lock(
    d: Journal,
    kind: LockKind,
    ref: str,
    *,
    reason: str,
    now: float,
    ttl_s: float | None = None,
    incident: str | None = None,
) -> dict[str, Any]:
    reason = _reason(reason)
    if ttl_s is not None and not 0 < ttl_s <= LOCK_TTL_MAX_S:
        raise BadRequest(
            f"a lock's TTL must be positive and at most {LOCK_TTL_MAX_S // 86400} days"
        )
    lock_id = new_id("lck")
    expires_at = now + ttl_s if ttl_s is not None else None
    with write_transaction(d.engine) as conn:
        target, target_name = resolve_target(conn, kind, ref)
        existing = _active_same(conn, kind, target, now)
        if existing is not None:
            raise Conflict(f"{kind.value} {target_name} is already locked ({existing.id})")
        incident_id = None
        if incident is not None:
            row = conn.execute(
                sa.select(schema.incidents.c.id).where(schema.incidents.c.id == incident)
            ).first()
            if row is None:
                raise BadRequest(f"incident {incident!r} does not exist")
            incident_id = row.id
        values = {
            "id": lock_id,
            "kind": kind.value,
            "target": target,
            "target_name": target_name,
            "reason": reason,
            "created_by": d.actor,
            "created_at": now,
            "expires_at": expires_at,
            "incident_id": incident_id,
        }
        conn.execute(sa.insert(schema.locks).values(**values))
        if incident_id is not None:
            conn.execute(
                sa.insert(schema.incident_notes).values(
                    incident_id=incident_id,
                    at=now,
                    author=d.actor,
                    kind="action",
                    text=f"lock {lock_id}: {kind.value} {target_name} — {reason}",
                )
            )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=LockCreated(
                lock_id=lock_id,
                kind=kind.value,
                target=target,
                target_name=target_name,
                reason=reason,
                expires_at=expires_at,
                incident_id=incident_id,
            ),
            entity="lock",
            entity_id=lock_id,
            op="create",
            principal_id=target if kind is LockKind.PRINCIPAL else None,
            credential_id=target if kind is LockKind.CREDENTIAL else None,
        )
    return values


def lock_row(conn: sa.Connection, lock_id: str) -> Any:
    lk = schema.locks
    return conn.execute(sa.select(lk).where(lk.c.id == lock_id)).first()


# The fields of a lock record kept in the emergency journal (and of a ``locks`` row).
EMERGENCY_FIELDS = ("id", "kind", "target", "target_name", "reason", "created_by", "created_at")


def adopt_emergency_lock(d: Journal, record: dict[str, Any], *, now: float) -> bool:
    """Write a lock placed while the database could not be written, with its audit record
    (``lock.created``, ``emergency: true``, the time it was placed). False if it is stored
    already (another process folded it first)."""
    values = {k: record[k] for k in EMERGENCY_FIELDS}
    values["expires_at"] = record.get("expires_at")
    kind = LockKind(values["kind"])
    with write_transaction(d.engine) as conn:
        if conn.execute(
            sa.select(schema.locks.c.id).where(schema.locks.c.id == values["id"])
        ).first():
            return False
        conn.execute(sa.insert(schema.locks).values(**values))
        journal.record(
            conn,
            at=now,
            actor=values["created_by"],
            origin=d.origin,
            payload=LockCreated(
                lock_id=values["id"],
                kind=kind.value,
                target=values["target"],
                target_name=values["target_name"],
                reason=values["reason"],
                expires_at=values["expires_at"],
                incident_id=None,
                emergency=True,
                placed_at=values["created_at"],
            ),
            entity="lock",
            entity_id=values["id"],
            op="create",
            principal_id=values["target"] if kind is LockKind.PRINCIPAL else None,
            credential_id=values["target"] if kind is LockKind.CREDENTIAL else None,
        )
    return True


def lift_lock(d: Journal, lock_id: str, *, reason: str, now: float) -> dict[str, Any]:
    """Lift a lock. A global lockdown needs a second admin: returns ``{"status": "pending"}``
    for the first request and ``{"status": "lifted"}`` once lifted."""
    reason = _reason(reason)
    lk = schema.locks
    with write_transaction(d.engine) as conn:
        row = conn.execute(sa.select(lk).where(lk.c.id == lock_id)).first()
        if row is None:
            raise NotFound(f"no lock {lock_id!r}", public_message=f"No lock {lock_id!r}.")
        if row.lifted_at is not None:
            raise Conflict(f"lock {lock_id} was already lifted")
        kind = LockKind(row.kind)
        common: dict[str, Any] = {
            "at": now,
            "actor": d.actor,
            "origin": d.origin,
            "entity": "lock",
            "entity_id": lock_id,
        }
        pending = (
            row.lift_requested_by is not None
            and row.lift_requested_at is not None
            and now - row.lift_requested_at <= LIFT_REQUEST_TTL_S
        )
        if kind is LockKind.ALL and not pending:
            conn.execute(
                sa.update(lk)
                .where(lk.c.id == lock_id)
                .values(lift_requested_by=d.actor, lift_requested_at=now, lift_reason=reason)
            )
            requested = LockLiftRequested(
                lock_id=lock_id, kind=kind.value, target=row.target, reason=reason
            )
            journal.record(conn, payload=requested, op="lift_request", **common)
            return {"id": lock_id, "status": "pending", "requested_by": d.actor}
        if kind is LockKind.ALL and row.lift_requested_by == d.actor:
            raise Conflict(
                "lifting a global lockdown needs a second, different admin "
                f"(requested by {d.actor})",
                rule="two-person",
            )
        confirmed = {"requested_by": row.lift_requested_by} if kind is LockKind.ALL else {}
        conn.execute(
            sa.update(lk)
            .where(lk.c.id == lock_id)
            .values(lifted_at=now, lifted_by=d.actor, lift_reason=reason)
        )
        if row.incident_id is not None:
            conn.execute(
                sa.insert(schema.incident_notes).values(
                    incident_id=row.incident_id,
                    at=now,
                    author=d.actor,
                    kind="action",
                    text=f"lock {lock_id} lifted — {reason}",
                )
            )
        journal.record(
            conn,
            payload=LockLifted(
                lock_id=lock_id,
                kind=kind.value,
                target=row.target,
                reason=reason,
                requested_by=row.lift_requested_by if kind is LockKind.ALL else ABSENT,
            ),
            op="lift",
            principal_id=row.target if kind is LockKind.PRINCIPAL else None,
            credential_id=row.target if kind is LockKind.CREDENTIAL else None,
            **common,
        )
    return {"id": lock_id, "status": "lifted", **confirmed}


def list_locks(
    conn: sa.Connection, now: float, *, include_ended: bool = False
) -> list[dict[str, Any]]:
    lk = schema.locks
    # Who placed the lock, by name (null when the actor is not a principal, e.g. a playbook).
    placer = schema.principals.alias("placer")
    stmt = (
        sa.select(lk, placer.c.name.label("created_by_name"))
        .select_from(lk.outerjoin(placer, placer.c.id == lk.c.created_by))
        .order_by(lk.c.created_at.desc())
    )
    if not include_ended:
        stmt = stmt.where(
            lk.c.lifted_at.is_(None), sa.or_(lk.c.expires_at.is_(None), lk.c.expires_at > now)
        )
    out = []
    for r in conn.execute(stmt):
        if r.lifted_at is not None:
            state = "lifted"
        elif r.expires_at is not None and r.expires_at <= now:
            state = "expired"
        elif (
            r.lift_requested_by is not None
            and r.lift_requested_at is not None
            and now - r.lift_requested_at <= LIFT_REQUEST_TTL_S
        ):
            state = "lift-pending"
        else:
            state = "active"
        out.append(
            {
                "id": r.id,
                "kind": r.kind,
                "target": r.target,
                "target_name": r.target_name,
                "reason": r.reason,
                "state": state,
                "created_by": r.created_by,
                "created_by_name": r.created_by_name,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "incident_id": r.incident_id,
                "lifted_at": r.lifted_at,
                "lifted_by": r.lifted_by,
                "lift_reason": r.lift_reason,
                "lift_requested_by": r.lift_requested_by,
            }
        )
    return out


def link_incident(d: Journal, lock_id: str, incident_id: str, *, now: float) -> None:
    """Attach a lock placed before its incident existed (a playbook locks first)."""
    with write_transaction(d.engine) as conn:
        conn.execute(
            sa.update(schema.locks)
            .where(schema.locks.c.id == lock_id, schema.locks.c.incident_id.is_(None))
            .values(incident_id=incident_id)
        )
        conn.execute(
            sa.insert(schema.incident_notes).values(
                incident_id=incident_id,
                at=now,
                author=d.actor,
                kind="action",
                text=f"lock {lock_id} placed by {d.actor}",
            )
        )
