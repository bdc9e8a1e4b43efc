"""Invitations: a one-time enrollment code issued for a person, shown once to the inviter,
delivered out of band, and kept here only as an HMAC under the pepper. The person redeems it
themselves (``store.enrollment``) and gets their own key; the inviter never sees that key.

A code is a key in waiting: it is refused, like any key, while a lock covers the person or
their org, and a person who holds a role, a compartment or a clearance above internal is
invited only under a change a second admin approved.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import caller_address
from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads_directory import CredentialRevoked, EnrollmentIssued
from garrison.domain import Level, PrincipalKind, Status
from garrison.domain.provenance import Provenance
from garrison.domain.secret import Secret
from garrison.domain.two_person import new_principal_is_sensitive
from garrison.errors import BadRequest, Conflict
from garrison.store import changes, journal, key_containment, keys, schema
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import lookup, new_id

# A code lives a working day at most: long enough to deliver out of band, short enough that
# a code lost in a mailbox is dead by tomorrow (the issue's limit is 24 h).
ENROLL_CODE_TTL_S = 24 * 3600.0
# 256 bits: a code is a bearer secret until it is used.
ENROLL_CODE_BYTES = 32
ENROLL_CODE_PREFIX = "ge"
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
    return new_principal_is_sensitive(
        Level(row.clearance),
        orjson.loads(row.compartments or "[]"),
        orjson.loads(row.roles or "[]"),
    )


def issue(
    d: Journal,
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
        changes.mark_used(conn, change_id)
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
    journal.record(
        conn,
        at=now,
        actor=d.actor,
        origin=d.origin,
        payload=EnrollmentIssued(
            enrollment_id=enrollment_id,
            name=row.name,
            expires_at=expires_at,
            why=why,
            change_id=change_id if change_id else ABSENT,
        ),
        entity="enrollment",
        entity_id=enrollment_id,
        op="issue",
        principal_id=row.id,
        feed=False,
    )
    return Invitation(enrollment_id, code, row.id, row.name, expires_at)


def invite(d: Journal, ref: str, *, now: float, change_id: str | None = None) -> Invitation:
    with write_transaction(d.engine) as conn:
        row = lookup(conn, schema.principals, ref, "principal")
        return issue(d, conn, row, now=now, change_id=change_id)


def rotate_person_key(
    d: Journal, key_id: str, *, now: float, reason: str, grace_s: float = 0.0
) -> Invitation | None:
    """An admin rotating a person's key: the key is revoked now (no grace) and the person
    gets a new enrollment code (returned, for delivery); the admin never gets a secret.
    A person who holds a role, a compartment or a clearance above internal gets no code
    here (None): they are invited again, which a second admin approves.
    Refused, with nothing written, while a lock covers the key (or a key it came from), the
    person or their org."""
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
        row = lookup(conn, schema.principals, old.principal_id, "principal")
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
            keys.revoke_in(
                d,
                conn,
                key_id=key_id,
                principal_id=row.id,
                now=now,
                why=CredentialRevoked(reason=reason, rotation="re-enroll"),
            )
        if needs_second_admin(row):
            return None
        return issue(d, conn, row, now=now, why="rotation")


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
