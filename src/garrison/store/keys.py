"""Keys: issuing, rotating and revoking a principal's credentials.

Each write is one transaction holding the key, its change-feed row and its audit event.
A key is refused while a lock covers its principal, their org or (rotating) the key it
replaces (``store.key_containment``); a vendor's key stays within the vendor's networks and
contract (``vendors.key_terms``). The secret is shown once, in the returned ``CreatedKey``;
only its hash is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads_directory import (
    CredentialCreated,
    CredentialRevoked,
    CredentialRotated,
)
from garrison.domain import Network, PrincipalKind, Status
from garrison.domain.directory_rules import (
    KEY_MAX_LIFETIME_S,
    check_grace,
    check_key_lifetime,
)
from garrison.domain.names import check_networks, check_text
from garrison.domain.provenance import Provenance
from garrison.errors import BadRequest, Conflict
from garrison.identity import IssuedKey, issue_key
from garrison.identity.cert_binding import is_thumbprint
from garrison.store import changes, journal, key_containment, schema, vendors
from garrison.store.columns import json_list, parse_networks
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import lookup


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: IssuedKey
    principal_id: str
    expires_at: float


def insert_key(
    d: Journal,
    conn: sa.Connection,
    row: Any,
    nets: tuple[Network, ...],
    expires_at: float,
    *,
    note: str,
    canary: bool,
    now: float,
    rotated_from: str | None = None,
    vendor_rotation: str | None = None,
    enrollment_id: str | None = None,
    invited_by: str | None = None,
    provenance: Provenance = Provenance.LEGACY,
    created_by: str | None = None,
    cert_thumbprint: str | None = None,
) -> CreatedKey:
    """A new key for principal ``row``, inside the caller's transaction. Refused while a
    lock covers the principal, its org or (``rotated_from``) the key it replaces.
    ``cert_thumbprint``: bind it to a client certificate (service accounts only). Its
    record names where it came from: the key it replaces (``rotated_from``), the vendor
    whose containment made it (``vendor_rotation``), or the enrollment code redeemed for it
    (``enrollment_id``, with who ``invited_by``)."""
    creator = d.actor if created_by is None else created_by
    if row.status != Status.ACTIVE.value:
        raise BadRequest(f"principal {row.name!r} is {row.status}; no key can be issued")
    check_binding(row, cert_thumbprint)
    key_containment.refuse_if_locked(
        conn,
        principal_id=row.id,
        org_id=row.org_id,
        now=now,
        key_id=rotated_from,
        action=f"rotate key {rotated_from}" if rotated_from else "issue a key",
    )
    terms = vendors.vendor_of(conn, row.org_id)
    if terms is not None:
        nets, expires_at = vendors.key_terms(terms, nets, expires_at, now)
    issued = issue_key(d.pepper)
    conn.execute(
        sa.insert(schema.credentials).values(
            id=issued.key_id,
            principal_id=row.id,
            secret_hash=issued.secret_hash,
            created_at=now,
            expires_at=expires_at,
            networks=json_list(nets),
            note=note,
            canary=canary,
            provenance=provenance.value,
            created_by=creator,
            cert_thumbprint=cert_thumbprint,
        )
    )
    journal.record(
        conn,
        at=now,
        actor=d.actor,
        origin=d.origin,
        payload=CredentialCreated(
            expires_at=expires_at,
            networks=[str(n) for n in nets],
            note=note,
            provenance=provenance.value,
            created_by=creator,
            cert_thumbprint=ABSENT if cert_thumbprint is None else cert_thumbprint,
            rotated_from=ABSENT if rotated_from is None else rotated_from,
            vendor_rotation=ABSENT if vendor_rotation is None else vendor_rotation,
            enrollment_id=ABSENT if enrollment_id is None else enrollment_id,
            invited_by=ABSENT if enrollment_id is None else invited_by,
        ),
        entity="credential",
        entity_id=issued.key_id,
        op="create",
        principal_id=row.id,
        credential_id=issued.key_id,
    )
    return CreatedKey(key=issued, principal_id=row.id, expires_at=expires_at)


def check_binding(row: Any, cert_thumbprint: str | None) -> None:
    """Only a service account's key is bound to a certificate (people prove possession with
    DPoP-bound sign-in tokens), and only to a well-formed thumbprint."""
    if cert_thumbprint is None:
        return
    if row.kind != PrincipalKind.SERVICE.value:
        raise BadRequest(
            f"{row.name!r} is a person: only a service account's key is bound to a client "
            "certificate (people sign in; their tokens are bound to their device's key)"
        )
    if not is_thumbprint(cert_thumbprint):
        raise BadRequest("cert_thumbprint must be an x5t#S256: 43 base64url characters")


def create_key(
    d: Journal,
    principal: str,
    *,
    now: float,
    expires_in: float | None = None,
    networks: Iterable[str] = (),
    note: str = "",
    canary: bool = False,
    provenance: Provenance = Provenance.LEGACY,
    created_by: str | None = None,
    change_id: str | None = None,
    cert_thumbprint: str | None = None,
) -> CreatedKey:
    """A key for ``principal``. ``provenance`` says how it came to be (the caller knows:
    the admin API, enrollment, break glass); in-process set-up that says nothing makes a
    ``legacy`` key, which works for calls and approves nothing. ``change_id``: the
    approved two-person change that authorises it, spent in the same transaction.
    ``cert_thumbprint``: the key works only with that client certificate (RFC 8705)."""
    nets = check_networks(networks)
    lifetime = check_key_lifetime(expires_in)
    check_text(note, "note")
    with write_transaction(d.engine) as conn:
        row = lookup(conn, schema.principals, principal, "principal")
        if change_id is not None:
            changes.mark_used(conn, change_id)
        return insert_key(
            d,
            conn,
            row,
            nets,
            now + lifetime,
            note=note,
            canary=canary,
            now=now,
            provenance=provenance,
            created_by=created_by,
            cert_thumbprint=cert_thumbprint,
        )


def rotate_key(
    d: Journal,
    key_id: str,
    *,
    now: float,
    grace_s: float = 0.0,
    reason: str = "",
    provenance: Provenance | None = None,
    change_id: str | None = None,
) -> CreatedKey:
    """Issue a successor to a live key and retire the old one, in one transaction.
    ``change_id``: the approved change that authorised it, spent here (once).

    The successor keeps the principal, networks, note, certificate binding and lifetime
    (clipped as any new key is): a new certificate means a new key (create, then revoke).
    The old key is revoked now, or, with ``grace_s``, expires that much later so that
    clients can switch over without an outage.
    """
    check_grace(grace_s)
    check_text(reason, "reason")
    c = schema.credentials
    with write_transaction(d.engine) as conn:
        old = conn.execute(sa.select(c).where(c.c.id == key_id)).first()
        if old is None:
            raise BadRequest(f"key {key_id!r} does not exist")
        if old.revoked_at is not None:
            raise Conflict(f"key {key_id!r} is revoked; create a new key instead")
        if old.expires_at is not None and old.expires_at <= now:
            raise Conflict(f"key {key_id!r} has expired; create a new key instead")
        row = lookup(conn, schema.principals, old.principal_id, "principal")
        if change_id is not None:
            changes.mark_used(conn, change_id)
        lifetime = min(
            KEY_MAX_LIFETIME_S,
            (old.expires_at - old.created_at) if old.expires_at else KEY_MAX_LIFETIME_S,
        )
        created = insert_key(
            d,
            conn,
            row,
            parse_networks(old.networks),
            now + lifetime,
            note=old.note,
            canary=bool(old.canary),
            now=now,
            rotated_from=key_id,
            provenance=Provenance(old.provenance) if provenance is None else provenance,
            cert_thumbprint=old.cert_thumbprint,
        )
        if grace_s > 0:
            retire = {"expires_at": min(old.expires_at or now + grace_s, now + grace_s)}
        else:
            retire = {"revoked_at": now}
        conn.execute(sa.update(c).where(c.c.id == key_id).values(**retire))
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=CredentialRotated(successor=created.key.key_id, grace_s=grace_s, reason=reason),
            entity="credential",
            entity_id=key_id,
            op="rotate",
            principal_id=row.id,
            credential_id=key_id,
        )
    return created


def revoke_key(d: Journal, key_id: str, *, now: float, reason: str) -> None:
    with write_transaction(d.engine) as conn:
        row = conn.execute(
            sa.select(schema.credentials).where(schema.credentials.c.id == key_id)
        ).first()
        if row is None:
            raise BadRequest(f"key {key_id!r} does not exist")
        if row.revoked_at is not None:
            raise Conflict(f"key {key_id!r} is already revoked")
        revoke_in(
            d,
            conn,
            key_id=key_id,
            principal_id=row.principal_id,
            now=now,
            why=CredentialRevoked(reason=reason),
        )


def revoke_in(
    d: Journal,
    conn: sa.Connection,
    *,
    key_id: str,
    principal_id: str,
    now: float,
    why: CredentialRevoked,
) -> None:
    """Revoke key ``key_id`` (of ``principal_id``) now, with its ``credential.revoked``
    record, in the caller's transaction (the caller has found it live). Every revocation of
    one key is written here: an admin's, a person's rotation by a new enrollment code and a
    vendor's containment."""
    c = schema.credentials
    conn.execute(sa.update(c).where(c.c.id == key_id).values(revoked_at=now))
    journal.record(
        conn,
        at=now,
        actor=d.actor,
        origin=d.origin,
        payload=why,
        entity="credential",
        entity_id=key_id,
        op="revoke",
        principal_id=principal_id,
        credential_id=key_id,
    )
