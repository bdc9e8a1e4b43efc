"""Identity links: which person a provider's (``iss``, ``sub``) is, recorded once.

A person is linked by their first sign-in, which redeems the enrollment code of their
invitation (``garrison.store.enrollment``) instead of getting a key: the code names the
person, the verified ID token names the provider account. Afterwards the pair alone finds
the person; email addresses and usernames are never matched (they can be renamed or
reassigned). Garrison never creates a person from a sign-in, and a sign-in with no link is
refused.

The redemption keeps every rule of key enrollment: the code is single-use, expires, is
refused from the inviter's recent addresses (the inviter held the code), and while a lock
covers the inviter; refusals are audit events (the same ``enrollment.refused``). On top:
a provider account already linked to someone cannot take another person's code (an inviter
who signs in with their own account would otherwise become the invitee: the code is burnt
and an alert raised), and the caller's ``may_assert`` decides which people the provider may
speak for (a vendor's provider: only that vendor's people).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.payloads_identity import IdentityLinked, SessionStarted
from garrison.domain import PrincipalKind, Reason, Status
from garrison.errors import Forbidden
from garrison.store import journal, key_containment, schema
from garrison.store.db import write_transaction
from garrison.store.enrollment import (
    INVALID_CODE,
    EnrollRefused,
    _inviter_addresses,
    _refuse,
    _refuse_if_inviter_locked,
    hash_code,
)
from garrison.store.journal import Journal
from garrison.store.rows import lookup, new_id

links = schema.identity_links
en = schema.enrollments

# The one answer for a sign-in the directory does not know (no oracle on who is invited).
NOT_LINKED = (
    "sign-in refused: this identity is not linked to a Garrison person; sign in once with "
    "the enrollment code of your invitation (`garrison login --code ...`)"
)


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    principal_id: str
    issuer: str
    subject: str
    provider: str


class NotLinked(Forbidden):
    def __init__(self, reason: Reason = Reason.OIDC_NOT_LINKED) -> None:
        super().__init__(NOT_LINKED, public_message=NOT_LINKED)
        self.reason = reason


def find(conn: sa.Connection, issuer: str, subject: str) -> Link | None:
    row = conn.execute(
        sa.select(links).where(
            links.c.issuer == issuer, links.c.subject == subject, links.c.unlinked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    return Link(row.id, row.principal_id, row.issuer, row.subject, row.provider)


def find_link(engine: sa.Engine, issuer: str, subject: str) -> Link | None:
    with engine.connect() as conn:
        return find(conn, issuer, subject)


def links_of(conn: sa.Connection, principal_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(links)
        .where(links.c.principal_id == principal_id, links.c.unlinked_at.is_(None))
        .order_by(links.c.linked_at)
    )
    return [
        {"id": r.id, "issuer": r.issuer, "provider": r.provider, "linked_at": r.linked_at}
        for r in rows
    ]


def redeem_for_link(
    d: Journal,
    code: str,
    *,
    issuer: str,
    subject: str,
    provider: str,
    may_assert: Callable[[Any, Any], bool],
    now: float,
    address: str,
) -> Link:
    """Link (``issuer``, ``subject``) to the person the code was issued for, in one
    transaction with the code's use and an ``identity.linked`` event. ``may_assert(person,
    org)`` (rows) says whether this provider may speak for that person."""
    digest = hash_code(d.pepper, code.strip())
    refusal: tuple[Reason, Any, str] | None = None
    with write_transaction(d.engine) as conn:
        row = conn.execute(sa.select(en).where(en.c.code_hash == digest)).first()
        taken = find(conn, issuer, subject)
        if (
            row is None
            or row.used_at is not None
            or row.revoked_at is not None
            or now >= row.expires_at
        ):
            refusal = (Reason.ENROLL_REFUSED, row, INVALID_CODE)
        elif taken is not None and taken.principal_id == row.invited_by:
            refusal = (
                Reason.ENROLL_BY_INVITER,
                row,
                "sign-in refused: the inviter cannot redeem the code they issued; the code is "
                "void and an alert was raised",
            )
        elif taken is not None:
            refusal = (
                Reason.OIDC_ALREADY_LINKED,
                row,
                "sign-in refused: this identity is already linked to a Garrison person",
            )
        elif address == row.invited_from or address in _inviter_addresses(
            conn, row.invited_by, now
        ):
            refusal = (
                Reason.ENROLL_BY_INVITER,
                row,
                "sign-in refused: this address was used by the inviter in the last day; sign "
                "in from your own machine (the code is void and an alert was raised; ask for "
                "a new invitation)",
            )
        else:
            _refuse_if_inviter_locked(conn, row.invited_by, now)
            person = lookup(conn, schema.principals, row.principal_id, "principal")
            org = lookup(conn, schema.orgs, person.org_id, "org")
            if (
                person.kind != PrincipalKind.HUMAN.value
                or person.status != Status.ACTIVE.value
                or not may_assert(person, org)
            ):
                refusal = (Reason.OIDC_VENDOR_BOUND, row, INVALID_CODE)
            else:
                key_containment.refuse_if_locked(
                    conn,
                    principal_id=person.id,
                    org_id=person.org_id,
                    now=now,
                    action="link a sign-in",
                )
                # A new link for the same provider replaces the person's old one (their
                # account at the provider was recreated; a second admin approved the
                # invitation when the person holds anything sensitive).
                conn.execute(
                    sa.update(links)
                    .where(
                        links.c.principal_id == person.id,
                        links.c.issuer == issuer,
                        links.c.unlinked_at.is_(None),
                    )
                    .values(unlinked_at=now)
                )
                conn.execute(
                    sa.delete(links).where(
                        links.c.issuer == issuer,
                        links.c.subject == subject,
                        links.c.unlinked_at.is_not(None),
                    )
                )
                link_id = new_id("lnk")
                conn.execute(
                    sa.insert(links).values(
                        id=link_id,
                        principal_id=person.id,
                        issuer=issuer,
                        subject=subject,
                        provider=provider,
                        enrollment_id=row.id,
                        linked_at=now,
                        linked_from=address,
                    )
                )
                conn.execute(
                    sa.update(en).where(en.c.id == row.id).values(used_at=now, used_from=address)
                )
                journal.record(
                    conn,
                    at=now,
                    actor=person.id,
                    origin=None,
                    payload=IdentityLinked(
                        enrollment_id=row.id,
                        issuer=issuer,
                        provider=provider,
                        client_address=address,
                        invited_by=row.invited_by,
                    ),
                    entity="identity_link",
                    entity_id=link_id,
                    op="link",
                    principal_id=person.id,
                    feed=False,
                )
                return Link(link_id, person.id, issuer, subject, provider)
    reason, row, message = refusal
    raise _refuse(
        d,
        reason,
        now=now,
        address=address,
        enrollment=row,
        presented_key=None,
        message=message,
    )


# A session's row is kept this long after its token expired: the record of who signed in
# from where (the audit log keeps it for good); beyond it the table would only grow.
SESSION_RECORD_KEEP_S = 90 * 86400
# Sessions listed at most per call: a person signs in a few times a day.
SESSIONS_LIST_MAX = 500


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the directory keeps of a sign-in session: what its token says, never the token."""

    id: str
    principal_id: str
    issuer: str
    subject: str
    provider: str
    jkt: str
    amr: tuple[str, ...]
    acr: str | None
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    address: str | None


def record_session(
    engine: sa.Engine,
    session: SessionRecord,
    *,
    started: SessionStarted,
    request_id: str | None = None,
) -> None:
    """Record ``session`` with its ``session.started`` event (``started``: the exchange's
    facts) in one transaction, through the directory's audited write path: the token leaves only
    once both are durable. Rows expired longer than ``SESSION_RECORD_KEEP_S`` go on the way."""
    t = schema.sessions
    with write_transaction(engine) as conn:
        conn.execute(sa.delete(t).where(t.c.expires_at < session.issued_at - SESSION_RECORD_KEEP_S))
        conn.execute(
            sa.insert(t).values(
                id=session.id,
                principal_id=session.principal_id,
                issuer=session.issuer,
                subject=session.subject,
                provider=session.provider,
                jkt=session.jkt,
                amr=orjson.dumps(list(session.amr)).decode(),
                acr=session.acr,
                roles=orjson.dumps(list(session.roles)).decode(),
                issued_at=session.issued_at,
                expires_at=session.expires_at,
                address=session.address,
            )
        )
        journal.record(
            conn,
            at=session.issued_at,
            actor=session.principal_id,
            origin={"request_id": request_id} if request_id else None,
            payload=started,
            entity="session",
            entity_id=session.id,
            op="create",
            principal_id=session.principal_id,
            credential_id=session.id,
            feed=False,
        )


def session_owner(conn: sa.Connection, session_id: str) -> str | None:
    """The person a recorded session belongs to (None: no such session)."""
    t = schema.sessions
    row = conn.execute(sa.select(t.c.principal_id).where(t.c.id == session_id)).first()
    return None if row is None else str(row.principal_id)


def list_sessions(
    conn: sa.Connection,
    principal_id: str | None,
    *,
    now: float,
    include_ended: bool = False,
    orgs: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """A person's sessions (``principal_id`` None: everyone's in ``orgs``, None: all), newest
    first, live ones only unless ``include_ended``: the token's facts and the key's
    thumbprint, never any token material."""
    t = schema.sessions
    p = schema.principals
    stmt = sa.select(t).join(p, p.c.id == t.c.principal_id)
    if principal_id is not None:
        stmt = stmt.where(t.c.principal_id == principal_id)
    if orgs is not None:
        stmt = stmt.where(p.c.org_id.in_(sorted(orgs)))
    if not include_ended:
        stmt = stmt.where(t.c.expires_at > now)
    rows = conn.execute(stmt.order_by(t.c.issued_at.desc()).limit(SESSIONS_LIST_MAX))
    return [
        {
            "id": r.id,
            "principal_id": r.principal_id,
            "issuer": r.issuer,
            "subject": r.subject,
            "provider": r.provider,
            "jkt": r.jkt,
            "amr": orjson.loads(r.amr),
            "acr": r.acr,
            "roles": orjson.loads(r.roles),
            "issued_at": r.issued_at,
            "expires_at": r.expires_at,
            "address": r.address,
            "live": r.expires_at > now,
        }
        for r in rows
    ]


__all__ = [
    "NOT_LINKED",
    "EnrollRefused",
    "Link",
    "NotLinked",
    "SessionRecord",
    "find",
    "find_link",
    "list_sessions",
    "record_session",
    "redeem_for_link",
    "session_owner",
]
