"""Directory writes: each is one transaction holding the change, its change-feed row and its
audit event, so nothing is ever half-written and nothing changes unrecorded. The event goes
to the audit outbox; the audit writer alone gives it its leaf index (``garrison.audit``).

Validation happens before the transaction opens; a bad input raises ``BadRequest`` (or
``Conflict`` for a taken name) naming the rule, and nothing is written.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa

from garrison.audit.events import AuditEvent, EventName
from garrison.domain import (
    AuthStyle,
    Level,
    Network,
    OrgKind,
    PrincipalKind,
    Status,
    UpstreamApi,
    VendorStatus,
)
from garrison.domain.locks import LockKind
from garrison.domain.networks import parse_network
from garrison.domain.provenance import Provenance
from garrison.domain.request_fields import check_extra_fields
from garrison.domain.upstream_tls import UpstreamTls, check_upstream_tls
from garrison.errors import BadRequest, Conflict
from garrison.identity import IssuedKey, issue_key
from garrison.keyring import Sealer
from garrison.store import (
    changes,
    enrollment,
    incidents,
    key_containment,
    locks,
    principals,
    registry,
    schema,
    vendors,
)
from garrison.store.db import outbox_written, write_transaction
from garrison.store.snapshot import parse_networks

# Longest name of anything in the directory: long enough for any real naming scheme, short
# enough to keep tables, logs and the console readable.
NAME_MAX_CHARS = 200
# Keys never live longer than this (and default to it): a leaked key stops working on its own.
KEY_MAX_LIFETIME_S = 90 * 24 * 3600
# Networks per key: a handful of egress ranges is normal; hundreds means a misuse.
KEY_MAX_NETWORKS = 64
# A rotated key may overlap its successor for at most this long: enough to roll a fleet of
# clients over, short enough that rotating after a leak still ends the old key today.
KEY_ROTATION_GRACE_MAX_S = 24 * 3600
COMPARTMENTS_MAX = 64
URL_MAX_CHARS = 2000

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]*$")
# The shape of the ids this module makes (new_id): a name of that shape could stand for
# another object wherever "name or id" is accepted.
_ID_RE = re.compile(r"^[a-z]{3}_[0-9a-f]{16}$")
_COMPARTMENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def check_name(name: str, what: str = "name") -> str:
    name = name.strip()
    if not name:
        raise BadRequest(f"{what} must not be empty")
    if len(name) > NAME_MAX_CHARS:
        raise BadRequest(f"{what} is longer than {NAME_MAX_CHARS} characters")
    if _ID_RE.match(name):
        raise BadRequest(f"{what} {name!r} has the shape of an id; choose another name")
    if not _NAME_RE.match(name):
        raise BadRequest(
            f"{what} {name!r} may contain only letters, digits and . _ @ : / + - "
            "and must start with a letter or digit"
        )
    return name


def check_networks(values: Iterable[str], what: str = "key") -> tuple[Network, ...]:
    nets: list[Network] = []
    for value in values:
        try:
            nets.append(parse_network(value, strict=True))
        except ValueError as exc:
            raise BadRequest(f"invalid network {value!r}: {exc}") from None
    if len(nets) > KEY_MAX_NETWORKS:
        raise BadRequest(f"at most {KEY_MAX_NETWORKS} networks per {what}")
    return tuple(nets)


def check_compartments(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        value = value.strip()
        if not _COMPARTMENT_RE.match(value):
            raise BadRequest(
                f"invalid compartment {value!r}: lower-case letters, digits, _ and -, "
                "at most 63 characters"
            )
        out.add(value)
    if len(out) > COMPARTMENTS_MAX:
        raise BadRequest(f"at most {COMPARTMENTS_MAX} compartments")
    return frozenset(out)


def check_service_roles(kind: PrincipalKind, roles: frozenset[str]) -> None:
    """Admin actions must name a person: a service account's key, once leaked, would carry
    admin power with nobody to answer for it (and no MFA when SSO lands)."""
    if kind is PrincipalKind.SERVICE and roles:
        raise BadRequest("a service account cannot hold admin roles", rule="service-roles")


def check_owner(conn: sa.Connection, kind: PrincipalKind, owner: str | None) -> str | None:
    """A service account's owner is an active person (accountable for it); a person has
    none."""
    if owner is None:
        return None
    if kind is not PrincipalKind.SERVICE:
        raise BadRequest("only a service account has an owner", rule="owner")
    row = _lookup(conn, schema.principals, owner, "owner")
    if row.kind != PrincipalKind.HUMAN.value or row.status != Status.ACTIVE.value:
        raise BadRequest(f"the owner {row.name!r} must be an active person", rule="owner")
    return str(row.id)


def check_url(url: str) -> str:
    if len(url) > URL_MAX_CHARS:
        raise BadRequest(f"upstream URL is longer than {URL_MAX_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("upstream URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise BadRequest("upstream URL must not carry credentials; use --upstream-key-env")
    if parts.query or parts.fragment:
        raise BadRequest("upstream URL must not have a query or fragment")
    return url.rstrip("/")


def _json_list(values: Iterable[Any]) -> str:
    return orjson.dumps(sorted(str(v) for v in values)).decode()


def _record(
    conn: sa.Connection,
    *,
    at: float,
    actor: str,
    name: EventName,
    entity: str,
    entity_id: str,
    op: str,
    data: dict[str, Any],
    principal_id: str | None = None,
    credential_id: str | None = None,
    model: str | None = None,
    origin: dict[str, Any] | None = None,
    feed: bool = True,
) -> None:
    """One audit event in the caller's transaction (into the audit outbox, for the audit
    writer to index), and (``feed``) a change-feed row that makes every gateway process load
    a new snapshot. Changes the snapshot does not hold (alerts, incidents, proposals,
    requests) pass ``feed=False``."""
    if origin:
        # Where the change came from (the admin API: the admin's key, address, request id).
        data = {**data, "origin": origin}
        change_id = origin.get("change_id")
        if change_id is not None:
            # Applying a two-person change: it is marked approved in this same transaction,
            # so the change and its approval commit together or not at all.
            changes.mark_applied(conn, change_id, actor=actor, at=at)
    if feed:
        conn.execute(
            sa.insert(schema.change_feed).values(at=at, entity=entity, entity_id=entity_id, op=op)
        )
    event = AuditEvent(
        name,
        at=at,
        actor=actor,
        request_id=origin.get("request_id") if origin else None,
        principal_id=principal_id,
        credential_id=credential_id,
        model=model,
        data=data,
    )
    # Into the outbox, in this same transaction: the change and its record commit together or
    # not at all. Only the audit writer gives it a leaf index (garrison.audit.sqlite_sink).
    conn.execute(
        sa.insert(schema.audit_outbox).values(
            at=at,
            name=name.value,
            request_id=event.request_id,
            principal_id=principal_id,
            credential_id=credential_id,
            model=model,
            record=event.unindexed(),
        )
    )
    outbox_written(conn)


def _unique(conn: sa.Connection, table: sa.Table, name: str, what: str) -> None:
    if conn.execute(sa.select(table.c.id).where(table.c.name == name)).first() is not None:
        raise Conflict(f"{what} {name!r} already exists")


def _lookup(conn: sa.Connection, table: sa.Table, ref: str, what: str) -> Any:
    row = conn.execute(
        sa.select(table).where(sa.or_(table.c.id == ref, table.c.name == ref))
    ).first()
    if row is None:
        raise BadRequest(f"{what} {ref!r} does not exist")
    return row


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: IssuedKey
    principal_id: str
    expires_at: float


class Directory:
    """Writes to the directory on behalf of ``actor`` (who is named in every audit event).

    ``origin`` says where the change came from (for the admin API: the admin's name, key id,
    address and request id) and is kept in every event's data.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        actor: str,
        pepper: bytes,
        sealer: Sealer,
        origin: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.actor = actor
        self.origin = origin
        self._pepper = pepper
        self._sealer = sealer

    def create_org(self, name: str, kind: OrgKind, *, now: float) -> str:
        """An internal org. Vendors carry terms: ``create_vendor``."""
        if kind is OrgKind.VENDOR:
            raise BadRequest(
                "a vendor needs its terms (sponsor, contract, networks, seats, "
                "ceiling): use create_vendor / `garrison vendor add`"
            )
        name = check_name(name, "org name")
        org_id = new_id("org")
        with write_transaction(self.engine) as conn:
            _unique(conn, schema.orgs, name, "org")
            conn.execute(
                sa.insert(schema.orgs).values(id=org_id, name=name, kind=kind.value, created_at=now)
            )
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=EventName.ORG_CREATED,
                entity="org",
                entity_id=org_id,
                op="create",
                data={"org_id": org_id, "name": name, "kind": kind.value},
            )
        return org_id

    def create_principal(
        self,
        name: str,
        *,
        org: str,
        kind: PrincipalKind,
        clearance: Level,
        compartments: Iterable[str] = (),
        roles: Iterable[str] = (),
        now: float,
        dry_run: bool = False,
        owner: str | None = None,
    ) -> str:
        """A new principal; ``dry_run`` checks every rule and writes nothing. A service
        account names its ``owner``, an active person (a lock on them covers it)."""
        name = check_name(name, "principal name")
        comps = check_compartments(compartments)
        principal_id = new_id("prn")
        with write_transaction(self.engine) as conn:
            org_row = _lookup(conn, schema.orgs, org, "org")
            _unique(conn, schema.principals, name, "principal")
            terms = vendors.vendor_of(conn, org_row.id)
            role_set = vendors.check_roles(roles, vendor=terms is not None)
            check_service_roles(kind, role_set)
            owner_id = check_owner(conn, kind, owner)
            if terms is not None:
                vendors.check_person(conn, terms, org_row.id, clearance, comps, adding_seat=True)
            if dry_run:
                return principal_id
            conn.execute(
                sa.insert(schema.principals).values(
                    id=principal_id,
                    name=name,
                    org_id=org_row.id,
                    kind=kind.value,
                    clearance=int(clearance),
                    compartments=_json_list(comps),
                    status=Status.ACTIVE.value,
                    created_at=now,
                    roles=_json_list(role_set),
                    owner_id=owner_id,
                )
            )
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=EventName.PRINCIPAL_CREATED,
                entity="principal",
                entity_id=principal_id,
                op="create",
                principal_id=principal_id,
                data={
                    "name": name,
                    "org_id": org_row.id,
                    "kind": kind.value,
                    "roles": sorted(role_set),
                    "clearance": clearance.label,
                    "compartments": sorted(comps),
                    **({"owner_id": owner_id} if owner_id else {}),
                },
            )
        return principal_id

    def set_principal_status(self, ref: str, status: Status, *, now: float) -> None:
        principals.update_principal(self, ref, status=status, now=now)

    def update_principal(self, ref: str, **changes: Any) -> dict[str, Any]:
        return principals.update_principal(self, ref, **changes)

    def create_key(
        self,
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
    ) -> CreatedKey:
        """A key for ``principal``. ``provenance`` says how it came to be (the caller knows:
        the admin API, enrollment, break glass); in-process set-up that says nothing makes a
        ``legacy`` key, which works for calls and approves nothing. ``change_id``: the
        approved two-person change that authorises it, spent in the same transaction."""
        nets = check_networks(networks)
        lifetime = KEY_MAX_LIFETIME_S if expires_in is None else expires_in
        if lifetime <= 0:
            raise BadRequest("key lifetime must be positive")
        if lifetime > KEY_MAX_LIFETIME_S:
            raise BadRequest(
                f"key lifetime exceeds the maximum of {KEY_MAX_LIFETIME_S // 86400} days"
            )
        if len(note) > NAME_MAX_CHARS:
            raise BadRequest(f"note is longer than {NAME_MAX_CHARS} characters")
        with write_transaction(self.engine) as conn:
            row = _lookup(conn, schema.principals, principal, "principal")
            if change_id is not None:
                changes.mark_used(conn, change_id)
            return self._insert_key(
                conn,
                row,
                nets,
                now + lifetime,
                note=note,
                canary=canary,
                now=now,
                provenance=provenance,
                created_by=created_by,
            )

    def _insert_key(
        self,
        conn: sa.Connection,
        row: Any,
        nets: tuple[Network, ...],
        expires_at: float,
        *,
        note: str,
        canary: bool,
        now: float,
        extra: dict[str, Any] | None = None,
        rotated_from: str | None = None,
        provenance: Provenance = Provenance.LEGACY,
        created_by: str | None = None,
    ) -> CreatedKey:
        """A new key for principal ``row``, inside the caller's transaction. Refused while a
        lock covers the principal, its org or (``rotated_from``) the key it replaces."""
        creator = self.actor if created_by is None else created_by
        if row.status != Status.ACTIVE.value:
            raise BadRequest(f"principal {row.name!r} is {row.status}; no key can be issued")
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
        issued = issue_key(self._pepper)
        conn.execute(
            sa.insert(schema.credentials).values(
                id=issued.key_id,
                principal_id=row.id,
                secret_hash=issued.secret_hash,
                created_at=now,
                expires_at=expires_at,
                networks=_json_list(nets),
                note=note,
                canary=canary,
                provenance=provenance.value,
                created_by=creator,
            )
        )
        _record(
            conn,
            at=now,
            actor=self.actor,
            origin=self.origin,
            name=EventName.CREDENTIAL_CREATED,
            entity="credential",
            entity_id=issued.key_id,
            op="create",
            principal_id=row.id,
            credential_id=issued.key_id,
            data={
                "expires_at": expires_at,
                "networks": [str(n) for n in nets],
                "note": note,
                "provenance": provenance.value,
                "created_by": creator,
                **(extra or {}),
            },
        )
        return CreatedKey(key=issued, principal_id=row.id, expires_at=expires_at)

    def rotate_key(
        self,
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

        The successor keeps the principal, networks, note and lifetime (clipped as any new
        key is). The old key is revoked now, or, with ``grace_s``, expires that much later so
        that clients can switch over without an outage.
        """
        if not 0 <= grace_s <= KEY_ROTATION_GRACE_MAX_S:
            raise BadRequest(
                f"grace must be between 0 and {KEY_ROTATION_GRACE_MAX_S // 3600} hours"
            )
        if len(reason) > NAME_MAX_CHARS:
            raise BadRequest(f"reason is longer than {NAME_MAX_CHARS} characters")
        c = schema.credentials
        with write_transaction(self.engine) as conn:
            old = conn.execute(sa.select(c).where(c.c.id == key_id)).first()
            if old is None:
                raise BadRequest(f"key {key_id!r} does not exist")
            if old.revoked_at is not None:
                raise Conflict(f"key {key_id!r} is revoked; create a new key instead")
            if old.expires_at is not None and old.expires_at <= now:
                raise Conflict(f"key {key_id!r} has expired; create a new key instead")
            row = _lookup(conn, schema.principals, old.principal_id, "principal")
            if change_id is not None:
                changes.mark_used(conn, change_id)
            lifetime = min(
                KEY_MAX_LIFETIME_S,
                (old.expires_at - old.created_at) if old.expires_at else KEY_MAX_LIFETIME_S,
            )
            created = self._insert_key(
                conn,
                row,
                parse_networks(old.networks),
                now + lifetime,
                note=old.note,
                canary=bool(old.canary),
                now=now,
                extra={"rotated_from": key_id},
                rotated_from=key_id,
                provenance=Provenance(old.provenance) if provenance is None else provenance,
            )
            if grace_s > 0:
                retire = {"expires_at": min(old.expires_at or now + grace_s, now + grace_s)}
            else:
                retire = {"revoked_at": now}
            conn.execute(sa.update(c).where(c.c.id == key_id).values(**retire))
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=EventName.CREDENTIAL_ROTATED,
                entity="credential",
                entity_id=key_id,
                op="rotate",
                principal_id=row.id,
                credential_id=key_id,
                data={"successor": created.key.key_id, "grace_s": grace_s, "reason": reason},
            )
        return created

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    @property
    def pepper(self) -> bytes:
        return self._pepper

    def update_model(self, ref: str, **changes: Any) -> dict[str, Any]:
        return registry.update_model(self, ref, **changes)

    def create_lock(self, kind: LockKind, ref: str, **kw: Any) -> dict[str, Any]:
        return locks.create_lock(self, kind, ref, **kw)

    def lift_lock(self, lock_id: str, **kw: Any) -> dict[str, Any]:
        return locks.lift_lock(self, lock_id, **kw)

    def open_incident(self, title: str, **kw: Any) -> str:
        return incidents.open_incident(self, title, **kw)

    def update_incident(self, incident_id: str, **kw: Any) -> dict[str, Any]:
        return incidents.update_incident(self, incident_id, **kw)

    def rotate_vendor_keys(
        self, vendor: str, *, now: float, reason: str, may_issue: Any = None
    ) -> list[CreatedKey | enrollment.Invitation]:
        """Containment: revoke every live key of a vendor's people and service accounts, all
        in one transaction; each active person gets a new enrollment code (they make their
        own key), each active service account a new key (networks of its newest live key,
        else the vendor's). Codes and keys are returned for showing once. A vendor that
        cannot be issued keys (suspended, expired, offboarded, past its contract end) only
        has its keys revoked. ``may_issue(row)``: whether the caller may be handed a new key
        for service account ``row`` alone (one above their reach is only revoked)."""
        if len(reason) > NAME_MAX_CHARS:
            raise BadRequest(f"reason is longer than {NAME_MAX_CHARS} characters")
        p, c = schema.principals, schema.credentials
        issued: list[CreatedKey | enrollment.Invitation] = []
        with write_transaction(self.engine) as conn:
            org = _lookup(conn, schema.orgs, vendor, "vendor")
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
                    conn.execute(sa.update(c).where(c.c.id == old.id).values(revoked_at=now))
                    _record(
                        conn,
                        at=now,
                        actor=self.actor,
                        origin=self.origin,
                        name=EventName.CREDENTIAL_REVOKED,
                        entity="credential",
                        entity_id=old.id,
                        op="revoke",
                        principal_id=person.id,
                        credential_id=old.id,
                        data={"reason": reason, "vendor_rotation": org.id},
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
                    if enrollment.needs_second_admin(person):
                        continue
                    issued.append(
                        enrollment.issue(self, conn, person, now=now, why="vendor rotation")
                    )
                    continue
                if may_issue is not None and not may_issue(person):
                    continue  # above the caller's reach: a new key takes a second admin
                nets = parse_networks(live[0].networks) if live else ()
                issued.append(
                    self._insert_key(
                        conn,
                        person,
                        nets,
                        now + KEY_MAX_LIFETIME_S,
                        note=f"vendor rotation: {reason}"[:NAME_MAX_CHARS],
                        canary=False,
                        now=now,
                        extra={"vendor_rotation": org.id},
                        provenance=Provenance.SERVICE,
                    )
                )
        return issued

    def create_vendor(self, name: str, **terms: Any) -> str:
        return vendors.create_vendor(self, name, **terms)

    def update_vendor(self, ref: str, **changes: Any) -> dict[str, Any]:
        return vendors.update_vendor(self, ref, **changes)

    def set_vendor_status(
        self, ref: str, target: VendorStatus, *, now: float, reason: str = ""
    ) -> None:
        vendors.set_vendor_status(self, ref, target, now=now, reason=reason)

    def revoke_key(self, key_id: str, *, now: float, reason: str) -> None:
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                sa.select(schema.credentials).where(schema.credentials.c.id == key_id)
            ).first()
            if row is None:
                raise BadRequest(f"key {key_id!r} does not exist")
            if row.revoked_at is not None:
                raise Conflict(f"key {key_id!r} is already revoked")
            conn.execute(
                sa.update(schema.credentials)
                .where(schema.credentials.c.id == key_id)
                .values(revoked_at=now)
            )
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=EventName.CREDENTIAL_REVOKED,
                entity="credential",
                entity_id=key_id,
                op="revoke",
                principal_id=row.principal_id,
                credential_id=key_id,
                data={"reason": reason},
            )

    def create_model(
        self,
        name: str,
        *,
        upstream_url: str,
        upstream_model: str,
        api: UpstreamApi,
        auth_style: AuthStyle,
        level: Level,
        compartments: Iterable[str] = (),
        upstream_key: str | None = None,
        extra_fields: Iterable[str] = (),
        upstream_key_sealed: bytes | None = None,
        upstream_tls: UpstreamTls | None = None,
        now: float,
        dry_run: bool = False,
    ) -> str:
        """A new model. ``upstream_key_sealed``: the credential as it travelled sealed in a
        two-person proposal (re-sealed under the newest key, never opened here); ``dry_run``
        checks every rule and writes nothing."""
        name = check_name(name, "model name")
        upstream_model = check_name(upstream_model, "upstream model name")
        url = check_url(upstream_url)
        comps = check_compartments(compartments)
        extras = check_extra_fields(extra_fields)
        tls = check_upstream_tls(url, *upstream_tls.files()) if upstream_tls else None
        keyed = upstream_key is not None or upstream_key_sealed is not None
        if keyed and auth_style is AuthStyle.NONE:
            raise BadRequest("an upstream key was given but auth style is 'none'")
        if upstream_key_sealed is not None:
            sealed: bytes | None = self._sealer.rotate(upstream_key_sealed)
        else:
            sealed = self._sealer.seal(upstream_key) if upstream_key else None
        model_id = new_id("mdl")
        with write_transaction(self.engine) as conn:
            _unique(conn, schema.models, name, "model")
            if dry_run:
                return model_id
            conn.execute(
                sa.insert(schema.models).values(
                    id=model_id,
                    name=name,
                    upstream_url=url,
                    upstream_model=upstream_model,
                    api=api.value,
                    auth_style=auth_style.value,
                    level=int(level),
                    compartments=_json_list(comps),
                    upstream_key_sealed=sealed,
                    created_at=now,
                    extra_fields=_json_list(extras),
                    upstream_tls=orjson.dumps(tls.as_fields()).decode() if tls else None,
                )
            )
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=EventName.MODEL_CREATED,
                entity="model",
                entity_id=model_id,
                op="create",
                model=name,
                data={
                    "upstream_url": url,
                    "upstream_model": upstream_model,
                    "api": api.value,
                    "level": level.label,
                    "compartments": sorted(comps),
                    "upstream_key": "sealed" if sealed else None,
                    "extra_fields": sorted(extras),
                    **({"upstream_tls": tls.as_fields()} if tls else {}),
                },
            )
        return model_id

    def reseal_upstream_keys(self, sealer: Sealer, *, now: float) -> int:
        """Re-encrypt every sealed upstream key under ``sealer``'s newest key."""
        count = 0
        with write_transaction(self.engine) as conn:
            rows = conn.execute(
                sa.select(schema.models.c.id, schema.models.c.upstream_key_sealed).where(
                    schema.models.c.upstream_key_sealed.is_not(None)
                )
            ).all()
            for row in rows:
                conn.execute(
                    sa.update(schema.models)
                    .where(schema.models.c.id == row.id)
                    .values(upstream_key_sealed=sealer.rotate(bytes(row.upstream_key_sealed)))
                )
                count += 1
            # Credentials waiting sealed in two-person proposals are re-sealed too.
            count += changes.reseal_pending(conn, sealer)
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=EventName.SEAL_KEY_ROTATED,
                entity="keys",
                entity_id="seal",
                op="rotate",
                data={"resealed": count},
            )
        return count

    def record_event(self, name: EventName, *, now: float, data: dict[str, Any]) -> None:
        with write_transaction(self.engine) as conn:
            _record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=name,
                entity="system",
                entity_id="-",
                op=name.value,
                data=data,
                feed=False,
            )
