"""Invitations and enrollment: a person's credential is created by that person alone.

An admin (or vendor-manager) *invites*: a one-time enrollment code is issued for a person,
shown once to the inviter, delivered out of band, and kept here only as an HMAC under the
pepper. The person redeems it (``POST /admin/v1/enroll``) and gets their own key
(provenance ``enrolled``); the inviter never sees that key.

The inviter holds the code, so redemption is refused (the code burnt, an alert raised)
when it is presented with one of the inviter's own keys, or from an address the inviter
used in the last ``INVITER_ADDRESS_WINDOW_S``. Unknown, used, revoked and expired codes get
one identical answer; every refusal is an audit event.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import EventName, caller_address
from garrison.domain import PrincipalKind, Reason, Status
from garrison.domain.provenance import Provenance
from garrison.domain.secret import Secret
from garrison.errors import BadRequest, Conflict, Forbidden
from garrison.store import schema
from garrison.store.audit_rows import audit_rows
from garrison.store.db import write_transaction

if TYPE_CHECKING:
    from garrison.store.directory import CreatedKey, Directory

# A code lives a working day at most: long enough to deliver out of band, short enough that
# a code lost in a mailbox is dead by tomorrow (the issue's limit is 24 h).
ENROLL_CODE_TTL_S = 24 * 3600.0
# 256 bits: a code is a bearer secret until it is used.
ENROLL_CODE_BYTES = 32
ENROLL_CODE_PREFIX = "ge"
# A redemption from an address the inviter used this recently is the inviter's, not the
# person's: refused. One day covers the inviter's session that issued the code.
INVITER_ADDRESS_WINDOW_S = 24 * 3600.0
# At most this many of the inviter's recent audit events are read for their addresses (the
# endpoint is rate-limited; this bounds one redemption's work).
INVITER_EVENTS_SCAN_MAX = 20_000

# The one answer for a code that is unknown, used, revoked or expired (no oracle).
INVALID_CODE = "enrollment refused: the code is not valid (unknown, used or expired)"

en = schema.enrollments


def hash_code(pepper: bytes, code: str) -> bytes:
    return hmac.new(pepper, f"enroll:{code}".encode(), hashlib.sha256).digest()


def new_code() -> Secret:
    return Secret(f"{ENROLL_CODE_PREFIX}_{secrets.token_urlsafe(ENROLL_CODE_BYTES)}")


@dataclass(frozen=True, slots=True)
class Invitation:
    """A code for ``principal_id``, shown once to the inviter."""

    enrollment_id: str
    code: Secret
    principal_id: str
    name: str
    expires_at: float

    def public(self) -> dict[str, Any]:
        return {
            "enrollment_id": self.enrollment_id,
            # Shown once, in this response; only an HMAC of it is kept.
            "enrollment_code": self.code.reveal(),
            "principal_id": self.principal_id,
            "name": self.name,
            "expires_at": self.expires_at,
        }


def needs_second_admin(row: Any) -> bool:
    """A code for this person is a key that approves or reaches beyond internal: it is issued
    only under a change a second admin approved (an invitation), never by one admin alone
    (a rotation hands the code to the rotating admin, who could redeem it elsewhere)."""
    from garrison.domain import Level
    from garrison.store.changes import new_principal_is_sensitive

    return new_principal_is_sensitive(
        Level(row.clearance),
        orjson.loads(row.compartments or "[]"),
        orjson.loads(row.roles or "[]"),
    )


class EnrollRefused(Forbidden):
    """A redemption refused; ``reason`` is for the audit log."""

    def __init__(self, reason: Reason, message: str = INVALID_CODE) -> None:
        super().__init__(message, public_message=message)
        self.reason = reason


def issue(
    d: Directory,
    conn: sa.Connection,
    row: Any,
    *,
    now: float,
    change_id: str | None = None,
    why: str = "invite",
) -> Invitation:
    """A new code for person ``row`` in the caller's transaction; any earlier unused code of
    theirs stops working (one live code per person). Refused, like any key, while a lock
    covers the person or their org: a code is a key in waiting."""
    from garrison.store import key_containment
    from garrison.store.directory import _record, new_id

    if row.kind != PrincipalKind.HUMAN.value:
        raise BadRequest(
            f"{row.name!r} is a service account; service accounts "
            "get keys from an admin (`garrison key create`), never enrollment codes",
            rule="invite-people-only",
        )
    if row.status != Status.ACTIVE.value:
        raise BadRequest(f"principal {row.name!r} is {row.status}; enable them first")
    key_containment.refuse_if_locked(
        conn,
        principal_id=row.id,
        org_id=row.org_id,
        now=now,
        action="issue an enrollment code",
    )
    if change_id is not None:
        from garrison.store.changes import mark_used

        mark_used(conn, change_id)
    conn.execute(
        sa.update(en)
        .where(en.c.principal_id == row.id, en.c.used_at.is_(None), en.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    code = new_code()
    enrollment_id = new_id("enr")
    origin = d.origin or {}
    expires_at = now + ENROLL_CODE_TTL_S
    conn.execute(
        sa.insert(en).values(
            id=enrollment_id,
            code_hash=hash_code(d.pepper, code.reveal()),
            principal_id=row.id,
            invited_by=d.actor,
            invited_with=origin.get("credential_id"),
            invited_from=caller_address(origin),
            change_id=change_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    conn.execute(
        sa.update(schema.principals)
        .where(schema.principals.c.id == row.id)
        .values(invited_by=d.actor)
    )
    _record(
        conn,
        at=now,
        actor=d.actor,
        origin=d.origin,
        name=EventName.ENROLLMENT_ISSUED,
        entity="enrollment",
        entity_id=enrollment_id,
        op="issue",
        principal_id=row.id,
        feed=False,
        data={
            "enrollment_id": enrollment_id,
            "name": row.name,
            "expires_at": expires_at,
            "why": why,
            **({"change_id": change_id} if change_id else {}),
        },
    )
    return Invitation(enrollment_id, code, row.id, row.name, expires_at)


def invite(d: Directory, ref: str, *, now: float, change_id: str | None = None) -> Invitation:
    from garrison.store.directory import _lookup

    with write_transaction(d.engine) as conn:
        row = _lookup(conn, schema.principals, ref, "principal")
        return issue(d, conn, row, now=now, change_id=change_id)


def rotate_person_key(
    d: Directory, key_id: str, *, now: float, reason: str, grace_s: float = 0.0
) -> Invitation | None:
    """An admin rotating a person's key: the key is revoked now (no grace) and the person
    gets a new enrollment code (returned, for delivery); the admin never gets a secret.
    A person who holds a role, a compartment or a clearance above internal gets no code
    here (None): they are invited again, which a second admin approves.
    Refused, with nothing written, while a lock covers the key (or a key it came from), the
    person or their org."""
    from garrison.store import key_containment
    from garrison.store.directory import _lookup, _record

    c = schema.credentials
    with write_transaction(d.engine) as conn:
        old = conn.execute(sa.select(c).where(c.c.id == key_id)).first()
        if old is None:
            raise BadRequest(f"key {key_id!r} does not exist")
        if old.revoked_at is not None:
            raise Conflict(f"key {key_id!r} is revoked; invite the person again instead")
        if old.expires_at is not None and old.expires_at <= now:
            raise Conflict(f"key {key_id!r} has expired; invite the person again instead")
        if grace_s:
            raise BadRequest(
                "rotating a person's key revokes it at once and gives them a "
                "new enrollment code; a grace period is for service accounts",
                rule="no-grace",
            )
        row = _lookup(conn, schema.principals, old.principal_id, "principal")
        # Checked before anything is written: a locked key is neither retired nor replaced.
        key_containment.refuse_if_locked(
            conn,
            principal_id=row.id,
            org_id=row.org_id,
            now=now,
            key_id=key_id,
            action=f"rotate key {key_id}",
        )
        if old.revoked_at is None:
            conn.execute(sa.update(c).where(c.c.id == key_id).values(revoked_at=now))
            _record(
                conn,
                at=now,
                actor=d.actor,
                origin=d.origin,
                name=EventName.CREDENTIAL_REVOKED,
                entity="credential",
                entity_id=key_id,
                op="revoke",
                principal_id=row.id,
                credential_id=key_id,
                data={"reason": reason, "rotation": "re-enroll"},
            )
        if needs_second_admin(row):
            return None
        return issue(d, conn, row, now=now, why="rotation")


def _refuse_if_inviter_locked(conn: sa.Connection, inviter: str, now: float) -> None:
    """A code is a key in waiting its inviter held: while a lock covers the inviter (or
    their org), it is not redeemed (a locked insider's pre-issued code stays dead)."""
    from garrison.store import key_containment

    org = conn.execute(
        sa.select(schema.principals.c.org_id).where(schema.principals.c.id == inviter)
    ).scalar()
    if org is None:
        return  # issued on the host (`garrison init`), not by a principal
    key_containment.refuse_if_locked(
        conn,
        principal_id=inviter,
        org_id=org,
        now=now,
        action="redeem a code issued by a locked inviter",
    )


def _inviter_addresses(conn: sa.Connection, inviter: str, now: float) -> set[str]:
    """Addresses the inviter's calls and admin actions came from in the window."""
    c, ev = schema.credentials, audit_rows()  # an admin action a moment ago counts
    keys = [r.id for r in conn.execute(sa.select(c.c.id).where(c.c.principal_id == inviter))]
    rows = conn.execute(
        sa.select(ev.c.record)
        .where(
            ev.c.at >= now - INVITER_ADDRESS_WINDOW_S,
            sa.or_(
                ev.c.principal_id == inviter,
                ev.c.credential_id.in_(keys) if keys else sa.false(),
                sa.cast(ev.c.record, sa.Text).contains(f'"actor":"{inviter}"'),
            ),
        )
        .order_by(ev.c.pending.desc(), ev.c.seq.desc())
        .limit(INVITER_EVENTS_SCAN_MAX)
    )
    found: set[str] = set()
    for (record,) in rows:
        data = orjson.loads(record).get("data") or {}
        for value in (caller_address(data), caller_address(data.get("origin") or {})):
            if isinstance(value, str):
                found.add(value)
    return found


def _refuse(
    d: Directory,
    reason: Reason,
    *,
    now: float,
    address: str,
    enrollment: Any,
    presented_key: str | None,
    message: str = INVALID_CODE,
) -> EnrollRefused:
    """Record the refusal (its own transaction: the redemption's rolled back); an attempt
    by the inviter also burns the code and raises a critical alert."""
    from garrison.store.directory import _record

    data: dict[str, Any] = {"client_address": address, "reasons": [reason.value]}
    if presented_key is not None:
        data["presented_key_id"] = presented_key
    principal_id = None
    if enrollment is not None:
        principal_id = enrollment.principal_id
        data.update(enrollment_id=enrollment.id, invited_by=enrollment.invited_by)
    with write_transaction(d.engine) as conn:
        if reason is Reason.ENROLL_BY_INVITER and enrollment is not None:
            conn.execute(sa.update(en).where(en.c.id == enrollment.id).values(revoked_at=now))
        _record(
            conn,
            at=now,
            actor=d.actor,
            origin=None,
            name=EventName.ENROLLMENT_REFUSED,
            entity="enrollment",
            entity_id=enrollment.id if enrollment is not None else "-",
            op="refuse",
            principal_id=principal_id,
            feed=False,
            data=data,
        )
    if reason is Reason.ENROLL_BY_INVITER and enrollment is not None:
        raise_alert(
            d,
            rule_id="enroll-by-inviter",
            title="An enrollment code was presented by its inviter",
            subject_kind="principal",
            subject_id=enrollment.invited_by,
            reason=reason.value,
            data=data,
            principal_id=enrollment.invited_by,
            now=now,
        )
    return EnrollRefused(reason, message)


def raise_alert(
    d: Directory,
    *,
    rule_id: str,
    title: str,
    subject_kind: str,
    subject_id: str,
    reason: str,
    data: dict[str, Any],
    now: float,
    principal_id: str | None = None,
) -> None:
    """A critical alert raised directly (identity events are not detector input)."""
    from garrison.detect.engine import Verdict
    from garrison.detect.observation import Finding, Severity
    from garrison.store import alerts

    finding = Finding(
        rule_id=rule_id,
        title=title,
        severity=Severity.CRITICAL,
        subject_kind=subject_kind,
        subject_id=subject_id,
        reason=reason,
        at=now,
        data=data,
        principal_id=principal_id if principal_id and principal_id.startswith("prn_") else None,
    )
    alerts.record(d, Verdict(finding, f"{rule_id}|{subject_kind}|{subject_id}", True), now=now)


def redeem(
    d: Directory,
    code: str,
    *,
    now: float,
    address: str,
    presented_principal: str | None = None,
    presented_key: str | None = None,
    networks: list[str] | None = None,
    expires_in: float | None = None,
    note: str = "",
) -> tuple[CreatedKey, str]:
    """Redeem ``code`` for the person's own key; returns it and the person's name.

    ``presented_principal`` / ``presented_key``: whoever authenticated on this call, if
    anyone (the endpoint needs no credential; presenting the inviter's is refused)."""
    from garrison.store.directory import (
        KEY_MAX_LIFETIME_S,
        Directory,
        _lookup,
        _record,
        check_networks,
    )

    nets = check_networks(networks or ())
    lifetime = KEY_MAX_LIFETIME_S if expires_in is None else expires_in
    if not 0 < lifetime <= KEY_MAX_LIFETIME_S:
        raise BadRequest(
            f"key lifetime must be positive and at most {KEY_MAX_LIFETIME_S // 86400} days"
        )
    digest = hash_code(d.pepper, code.strip())
    refusal: tuple[Reason, Any, str] | None = None
    with write_transaction(d.engine) as conn:
        row = conn.execute(sa.select(en).where(en.c.code_hash == digest)).first()
        if (
            row is None
            or row.used_at is not None
            or row.revoked_at is not None
            or now >= row.expires_at
        ):
            refusal = (Reason.ENROLL_REFUSED, row, INVALID_CODE)
        elif presented_principal is not None and presented_principal == row.invited_by:
            refusal = (
                Reason.ENROLL_BY_INVITER,
                row,
                "enrollment refused: the inviter cannot redeem the code they issued; the code "
                "is void and an alert was raised",
            )
        elif address == row.invited_from or address in _inviter_addresses(
            conn, row.invited_by, now
        ):
            refusal = (
                Reason.ENROLL_BY_INVITER,
                row,
                "enrollment refused: this address was used by the inviter in the last day; "
                "redeem the code from your own machine (the code is void and an alert was "
                "raised; ask for a new invitation)",
            )
        else:
            _refuse_if_inviter_locked(conn, row.invited_by, now)
            person = _lookup(conn, schema.principals, row.principal_id, "principal")
            own = Directory(
                d.engine,
                actor=person.id,
                pepper=d.pepper,
                sealer=d.sealer,
                origin={"via": "enroll", "client_address": address, "enrollment_id": row.id},
            )
            created = own._insert_key(
                conn,
                person,
                nets,
                now + lifetime,
                note=note or "enrolled",
                canary=False,
                now=now,
                provenance=Provenance.ENROLLED,
                created_by=person.id,
                extra={"enrollment_id": row.id, "invited_by": row.invited_by},
            )
            conn.execute(
                sa.update(en)
                .where(en.c.id == row.id)
                .values(used_at=now, used_from=address, credential_id=created.key.key_id)
            )
            _record(
                conn,
                at=now,
                actor=person.id,
                origin=None,
                name=EventName.ENROLLMENT_REDEEMED,
                entity="enrollment",
                entity_id=row.id,
                op="redeem",
                principal_id=person.id,
                credential_id=created.key.key_id,
                feed=False,
                data={
                    "enrollment_id": row.id,
                    "client_address": address,
                    "invited_by": row.invited_by,
                    "provenance": Provenance.ENROLLED.value,
                },
            )
            return created, person.name
    reason, row, message = refusal
    raise _refuse(
        d,
        reason,
        now=now,
        address=address,
        enrollment=row,
        presented_key=presented_key,
        message=message,
    )


def keys_made_for_others(conn: sa.Connection, now: float, orgs: Any = None) -> list[dict[str, Any]]:
    """Live keys of people that were not made by their holder (legacy keys an admin made,
    break-glass keys): each is a key someone else may hold; rotate it (the person gets an
    enrollment code)."""
    c, p = schema.credentials, schema.principals
    stmt = (
        sa.select(c, p.c.name.label("principal"), p.c.org_id)
        .join(p, p.c.id == c.c.principal_id)
        .where(
            p.c.kind == PrincipalKind.HUMAN.value,
            c.c.revoked_at.is_(None),
            sa.or_(c.c.expires_at.is_(None), c.c.expires_at > now),
            sa.or_(
                c.c.provenance.not_in([Provenance.ENROLLED.value, Provenance.SELF.value]),
                c.c.created_by.is_(None),
                c.c.created_by != c.c.principal_id,
            ),
        )
        .order_by(c.c.created_at)
    )
    if orgs is not None:
        stmt = stmt.where(p.c.org_id.in_(list(orgs)))
    return [
        {
            "id": r.id,
            "principal": r.principal,
            "principal_id": r.principal_id,
            "provenance": r.provenance,
            "created_by": r.created_by,
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "action": f"garrison key rotate {r.id}",
        }
        for r in conn.execute(stmt)
    ]
