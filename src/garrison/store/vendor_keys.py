"""Containment for a vendor: every live key of its people and service accounts revoked at
once, and new credentials issued to those who may still have them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from garrison.audit.payloads_directory import CredentialRevoked
from garrison.domain import OrgKind, PrincipalKind, Status, VendorStatus
from garrison.domain.directory_rules import KEY_MAX_LIFETIME_S
from garrison.domain.names import NAME_MAX_CHARS, check_text
from garrison.domain.provenance import Provenance
from garrison.errors import BadRequest
from garrison.store import invitations, key_containment, schema
from garrison.store.columns import parse_networks
from garrison.store.db import write_transaction
from garrison.store.invitations import Invitation
from garrison.store.journal import Journal
from garrison.store.keys import CreatedKey, insert_key, revoke_in
from garrison.store.rows import lookup


def rotate_vendor_keys(
    d: Journal,
    vendor: str,
    *,
    now: float,
    reason: str,
    may_issue: Callable[[Any], bool] | None = None,
) -> list[CreatedKey | Invitation]:
    """Containment: revoke every live key of a vendor's people and service accounts, all
    in one transaction; each active person gets a new enrollment code (they make their
    own key), each active service account a new key (networks of its newest live key,
    else the vendor's). Codes and keys are returned for showing once. A vendor that
    cannot be issued keys (suspended, expired, offboarded, past its contract end) only
    has its keys revoked. ``may_issue(row)``: whether the caller may be handed a new key
    for service account ``row`` alone (one above their reach is only revoked)."""
    check_text(reason, "reason")
    p, c = schema.principals, schema.credentials
    issued: list[CreatedKey | Invitation] = []
    with write_transaction(d.engine) as conn:
        org = lookup(conn, schema.orgs, vendor, "vendor")
        if org.kind != OrgKind.VENDOR.value:
            raise BadRequest(f"{org.name!r} is not a vendor")
        people = list(conn.execute(sa.select(p).where(p.c.org_id == org.id).order_by(p.c.name)))
        issuing = VendorStatus(org.status) in (
            VendorStatus.ONBOARDING,
            VendorStatus.ACTIVE,
        ) and now < (org.contract_end or 0)
        for person in people:
            live = list(
                conn.execute(
                    sa.select(c)
                    .where(
                        c.c.principal_id == person.id,
                        # Canaries stay armed: retiring one is a security-admin's, alone.
                        c.c.canary.is_(False),
                        c.c.revoked_at.is_(None),
                        sa.or_(c.c.expires_at.is_(None), c.c.expires_at > now),
                    )
                    .order_by(c.c.created_at.desc())
                )
            )
            for old in live:
                revoke_in(
                    d,
                    conn,
                    key_id=old.id,
                    principal_id=person.id,
                    now=now,
                    why=CredentialRevoked(reason=reason, vendor_rotation=org.id),
                )
            if person.status != Status.ACTIVE.value or not issuing:
                continue
            if any(
                key_containment.covering_lock(
                    conn, principal_id=person.id, org_id=org.id, now=now, key_id=key
                )
                for key in [old.id for old in live] or [None]
            ):
                continue  # locked: revoked above, and no new key while the lock holds
            if person.kind == PrincipalKind.HUMAN.value:
                # A person's key is theirs to make: they get a new enrollment code (one
                # who needs a second admin's approval is invited again instead).
                if invitations.needs_second_admin(person):
                    continue
                issued.append(invitations.issue(d, conn, person, now=now, why="vendor rotation"))
                continue
            if may_issue is not None and not may_issue(person):
                continue  # above the caller's reach: a new key takes a second admin
            nets = parse_networks(live[0].networks) if live else ()
            issued.append(
                insert_key(
                    d,
                    conn,
                    person,
                    nets,
                    now + KEY_MAX_LIFETIME_S,
                    note=f"vendor rotation: {reason}"[:NAME_MAX_CHARS],
                    canary=False,
                    now=now,
                    vendor_rotation=org.id,
                    provenance=Provenance.SERVICE,
                    # A bound key's successor stays bound: containment never downgrades it.
                    cert_thumbprint=live[0].cert_thumbprint if live else None,
                )
            )
    return issued
