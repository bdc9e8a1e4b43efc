"""Enrollment: a person's credential is created by that person alone.

An admin (or vendor-manager) *invites* (``store.invitations``): a one-time code is issued
for a person and shown once to the inviter. The person redeems it here
(``POST /admin/v1/enroll``) and gets their own key (provenance ``enrolled``); the inviter
never sees that key.

The inviter holds the code, so redemption is refused (the code burnt, an alert raised)
when it is presented with one of the inviter's own keys, or from an address the inviter
used in the last ``INVITER_ADDRESS_WINDOW_S``. Unknown, used, revoked and expired codes get
one identical answer; every refusal is an audit event.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import caller_address
from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads import payload_of
from garrison.audit.payloads_identity import EnrollmentRedeemed, EnrollmentRefused
from garrison.detect.engine import Verdict
from garrison.detect.observation import Finding, Severity
from garrison.domain import Reason
from garrison.domain.directory_rules import KEY_MAX_LIFETIME_S
from garrison.domain.names import check_networks
from garrison.domain.provenance import Provenance
from garrison.errors import BadRequest, Forbidden
from garrison.store import alerts, journal, key_containment, schema
from garrison.store.audit_rows import audit_rows
from garrison.store.db import write_transaction

# The invitation side, re-exported: callers name enrollment as one concept.
from garrison.store.invitations import Invitation as Invitation
from garrison.store.invitations import hash_code as hash_code
from garrison.store.invitations import invite as invite
from garrison.store.invitations import keys_made_for_others as keys_made_for_others
from garrison.store.invitations import rotate_person_key as rotate_person_key
from garrison.store.journal import Journal
from garrison.store.keys import CreatedKey, insert_key
from garrison.store.rows import lookup

# A redemption from an address the inviter used this recently is the inviter's, not the
# person's: refused. One day covers the inviter's session that issued the code.
INVITER_ADDRESS_WINDOW_S = 24 * 3600.0
# At most this many of the inviter's recent audit events are read for their addresses (the
# endpoint is rate-limited; this bounds one redemption's work).
INVITER_EVENTS_SCAN_MAX = 20_000

# The one answer for a code that is unknown, used, revoked or expired (no oracle).
INVALID_CODE = "enrollment refused: the code is not valid (unknown, used or expired)"

en = schema.enrollments


class EnrollRefused(Forbidden):
    """A redemption refused; ``reason`` is for the audit log."""

    def __init__(self, reason: Reason, message: str = INVALID_CODE) -> None:
        super().__init__(message, public_message=message)
        self.reason = reason


def _refuse_if_inviter_locked(conn: sa.Connection, inviter: str, now: float) -> None:
    """A code is a key in waiting its inviter held: while a lock covers the inviter (or
    their org), it is not redeemed (a locked insider's pre-issued code stays dead)."""
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
        read = orjson.loads(record)
        data = read.get("data") or {}
        origin = data.get("origin") or {}  # the journal's, beside any payload's keys
        for value in (
            payload_of(read.get("name", ""), data).client_address,
            caller_address(origin),
        ):
            if isinstance(value, str):
                found.add(value)
    return found


def _refuse(
    d: Journal,
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
    refused = EnrollmentRefused(
        client_address=address,
        reason_codes=(reason.value,),
        key_id=ABSENT if presented_key is None else presented_key,
        enrollment_id=ABSENT if enrollment is None else enrollment.id,
        invited_by=ABSENT if enrollment is None else enrollment.invited_by,
    )
    principal_id = None if enrollment is None else enrollment.principal_id
    with write_transaction(d.engine) as conn:
        if reason is Reason.ENROLL_BY_INVITER and enrollment is not None:
            conn.execute(sa.update(en).where(en.c.id == enrollment.id).values(revoked_at=now))
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=None,
            payload=refused,
            entity="enrollment",
            entity_id=enrollment.id if enrollment is not None else "-",
            op="refuse",
            principal_id=principal_id,
            feed=False,
        )
    if reason is Reason.ENROLL_BY_INVITER and enrollment is not None:
        raise_alert(
            d,
            rule_id="enroll-by-inviter",
            title="An enrollment code was presented by its inviter",
            subject_kind="principal",
            subject_id=enrollment.invited_by,
            reason=reason.value,
            data=refused.as_data(),
            principal_id=enrollment.invited_by,
            now=now,
        )
    return EnrollRefused(reason, message)


def raise_alert(
    d: Journal,
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
    d: Journal,
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
            person = lookup(conn, schema.principals, row.principal_id, "principal")
            own = d.acting(
                person.id, {"via": "enroll", "client_address": address, "enrollment_id": row.id}
            )
            created = insert_key(
                own,
                conn,
                person,
                nets,
                now + lifetime,
                note=note or "enrolled",
                canary=False,
                now=now,
                provenance=Provenance.ENROLLED,
                created_by=person.id,
                enrollment_id=row.id,
                invited_by=row.invited_by,
            )
            conn.execute(
                sa.update(en)
                .where(en.c.id == row.id)
                .values(used_at=now, used_from=address, credential_id=created.key.key_id)
            )
            journal.record(
                conn,
                at=now,
                actor=person.id,
                origin=None,
                payload=EnrollmentRedeemed(
                    enrollment_id=row.id,
                    client_address=address,
                    invited_by=row.invited_by,
                    provenance=Provenance.ENROLLED.value,
                ),
                entity="enrollment",
                entity_id=row.id,
                op="redeem",
                principal_id=person.id,
                credential_id=created.key.key_id,
                feed=False,
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
