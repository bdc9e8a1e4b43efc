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

import sqlalchemy as sa

from garrison.audit.events import EventName
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
                    name=EventName.IDENTITY_LINKED,
                    entity="identity_link",
                    entity_id=link_id,
                    op="link",
                    principal_id=person.id,
                    feed=False,
                    data={
                        "enrollment_id": row.id,
                        "issuer": issuer,
                        "provider": provider,
                        "address": address,
                        "invited_by": row.invited_by,
                    },
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


def record_dropped_roles(
    engine: sa.Engine,
    session_id: str,
    principal_id: str,
    dropped: frozenset[str],
    *,
    until: float,
    now: float,
) -> None:
    """Remember the roles a session does not hold (expired rows are cleared on the way)."""
    import orjson

    t = schema.session_roles
    with write_transaction(engine) as conn:
        conn.execute(sa.delete(t).where(t.c.expires_at <= now))
        conn.execute(
            sa.insert(t).values(
                session_id=session_id,
                principal_id=principal_id,
                dropped=orjson.dumps(sorted(dropped)).decode(),
                expires_at=until,
            )
        )


def dropped_roles(engine: sa.Engine, session_id: str) -> frozenset[str]:
    import orjson

    t = schema.session_roles
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.c.dropped).where(t.c.session_id == session_id)).first()
    return frozenset(orjson.loads(row.dropped)) if row is not None else frozenset()


__all__ = [
    "NOT_LINKED",
    "EnrollRefused",
    "Link",
    "NotLinked",
    "dropped_roles",
    "find",
    "find_link",
    "record_dropped_roles",
    "redeem_for_link",
]
