"""Vendor writes and the vendor rules every directory write obeys.

Each rule is checked inside the writing transaction (the write lock is held, so what is
checked is what is committed) and refused with a ``BadRequest`` naming the rule:

* a vendor principal's clearance and compartments never exceed the vendor's ceiling;
* a vendor never has more active principals than its seat limit;
* a vendor key's networks lie within the vendor's networks (a key with none gets the
  vendor's), and no key outlives the contract (its expiry is clipped to the contract end);
* lowering a ceiling, shrinking networks or seats below what is in use is refused, naming
  what is in the way; offboarding revokes every key and disables every principal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import EventName
from garrison.domain import (
    IllegalTransition,
    Level,
    Network,
    OrgKind,
    Status,
    VendorStatus,
    VendorTerms,
    check_transition,
)
from garrison.domain.roles import VENDOR_ROLES as _VENDOR_ROLES
from garrison.domain.roles import Role
from garrison.errors import BadRequest
from garrison.store import schema
from garrison.store.db import write_transaction
from garrison.store.snapshot import parse_compartments, parse_networks

if TYPE_CHECKING:
    from garrison.store.directory import Directory

# Seats per vendor: no contractor engagement needs more; a typo of 10x would.
SEAT_LIMIT_MAX = 10_000
# Admin roles. Vendor principals may hold only vendor-manager (for their own vendor).
ROLES = frozenset(r.value for r in Role)
VENDOR_ROLES = frozenset(r.value for r in _VENDOR_ROLES)
# Statuses in which a vendor may still gain people and keys.
_ISSUING = (VendorStatus.ONBOARDING, VendorStatus.ACTIVE)


def terms_of(row: Any) -> VendorTerms:
    """The terms stored on an org row (a vendor without a contract is never usable)."""
    return VendorTerms(
        sponsor_id=row.sponsor_id or "",
        contract_start=row.contract_start if row.contract_start is not None else 0.0,
        contract_end=row.contract_end if row.contract_end is not None else 0.0,
        networks=parse_networks(row.networks),
        seat_limit=row.seat_limit or 0,
        ceiling_level=Level(row.ceiling_level if row.ceiling_level is not None else 0),
        ceiling_compartments=parse_compartments(row.ceiling_compartments),
        status=VendorStatus(row.status),
        security_review_at=row.security_review_at,
        agreement_ref=row.agreement_ref,
    )


def vendor_status(conn: sa.Connection, ref: str) -> VendorStatus:
    """The status of the vendor ``ref`` (id or name); NotFound as any lookup."""
    from garrison.store.directory import _lookup

    row = _lookup(conn, schema.orgs, ref, "vendor")
    if row.kind != OrgKind.VENDOR.value:
        raise BadRequest(f"{row.name!r} is not a vendor")
    return VendorStatus(row.status)


def vendor_of(conn: sa.Connection, org_id: str) -> VendorTerms | None:
    row = conn.execute(sa.select(schema.orgs).where(schema.orgs.c.id == org_id)).first()
    if row is None or row.kind != OrgKind.VENDOR.value:
        return None
    return terms_of(row)


def check_roles(roles: Iterable[str], *, vendor: bool) -> frozenset[str]:
    out = frozenset(r.strip() for r in roles)
    unknown = out - ROLES
    if unknown:
        raise BadRequest(
            f"unknown role(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(ROLES))})"
        )
    if vendor and out - VENDOR_ROLES:
        raise BadRequest(
            "a vendor principal may hold only the vendor-manager role "
            f"(asked for {', '.join(sorted(out - VENDOR_ROLES))})"
        )
    return out


def check_person(
    conn: sa.Connection,
    terms: VendorTerms,
    org_id: str,
    clearance: Level,
    compartments: frozenset[str],
    *,
    adding_seat: bool,
) -> None:
    if terms.status not in _ISSUING:
        raise BadRequest(f"the vendor is {terms.status.value}: no one can be added or enabled")
    check_ceiling(terms, clearance, compartments)
    if adding_seat:
        active = _active_seats(conn, org_id)
        if active >= terms.seat_limit:
            raise BadRequest(
                f"the vendor has {active} active principal(s) and a seat "
                f"limit of {terms.seat_limit}",
                rule="vendor-seats",
            )


def check_ceiling(terms: VendorTerms, clearance: Level, compartments: frozenset[str]) -> None:
    if not terms.ceiling_allows(clearance, compartments):
        raise BadRequest(
            f"clearance {clearance.label} with compartments "
            f"{sorted(compartments)} exceeds the vendor's ceiling "
            f"({terms.ceiling_level.label}, {sorted(terms.ceiling_compartments)})",
            rule="vendor-ceiling",
        )


def _active_seats(conn: sa.Connection, org_id: str) -> int:
    p = schema.principals
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                p.c.org_id == org_id, p.c.status == Status.ACTIVE.value
            )
        ).scalar_one()
    )


def key_terms(
    terms: VendorTerms, networks: tuple[Network, ...], expires_at: float, now: float
) -> tuple[tuple[Network, ...], float]:
    """The networks and expiry a vendor key gets: within the vendor's, clipped to the contract."""
    if terms.status not in _ISSUING:
        raise BadRequest(f"the vendor is {terms.status.value}: no key can be issued")
    if now >= terms.contract_end:
        raise BadRequest("the vendor's contract has ended", rule="vendor-contract")
    if not networks:
        networks = terms.networks
    outside = [str(n) for n in networks if not terms.covers_network(n)]
    if outside:
        raise BadRequest(
            f"{', '.join(outside)} is not within the vendor's networks "
            f"({', '.join(str(n) for n in terms.networks)})",
            rule="vendor-networks",
        )
    return networks, min(expires_at, terms.contract_end)


def _json(values: Iterable[Any]) -> str:
    return orjson.dumps(sorted(str(v) for v in values)).decode()


def create_vendor(
    d: Directory,
    name: str,
    *,
    sponsor: str,
    contract_start: float,
    contract_end: float,
    networks: Iterable[str],
    seat_limit: int,
    ceiling_level: Level,
    ceiling_compartments: Iterable[str] = (),
    security_review_at: float | None = None,
    agreement_ref: str = "",
    now: float,
) -> str:
    from garrison.store.directory import (
        NAME_MAX_CHARS,
        _lookup,
        _record,
        _unique,
        check_compartments,
        check_name,
        check_networks,
        new_id,
    )

    name = check_name(name, "vendor name")
    nets = check_networks(networks, "vendor")
    comps = check_compartments(ceiling_compartments)
    if not nets:
        raise BadRequest("a vendor needs at least one allowed network (its egress ranges)")
    if contract_end <= contract_start:
        raise BadRequest("the contract must end after it starts")
    if contract_end <= now:
        raise BadRequest("the contract end is in the past")
    if not 1 <= seat_limit <= SEAT_LIMIT_MAX:
        raise BadRequest(f"seat limit must be between 1 and {SEAT_LIMIT_MAX}")
    if len(agreement_ref) > NAME_MAX_CHARS:
        raise BadRequest(f"agreement reference is longer than {NAME_MAX_CHARS} characters")
    org_id = new_id("org")
    with write_transaction(d.engine) as conn:
        _unique(conn, schema.orgs, name, "org")
        sponsor_row = _lookup(conn, schema.principals, sponsor, "sponsor")
        sponsor_org = conn.execute(
            sa.select(schema.orgs.c.kind).where(schema.orgs.c.id == sponsor_row.org_id)
        ).scalar_one()
        if sponsor_org != OrgKind.INTERNAL.value or sponsor_row.status != Status.ACTIVE.value:
            raise BadRequest("the sponsor must be an active principal of the internal org")
        conn.execute(
            sa.insert(schema.orgs).values(
                id=org_id,
                name=name,
                kind=OrgKind.VENDOR.value,
                created_at=now,
                sponsor_id=sponsor_row.id,
                contract_start=contract_start,
                contract_end=contract_end,
                networks=_json(nets),
                seat_limit=seat_limit,
                ceiling_level=int(ceiling_level),
                ceiling_compartments=_json(comps),
                security_review_at=security_review_at,
                agreement_ref=agreement_ref,
                status=VendorStatus.ONBOARDING.value,
            )
        )
        _record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            name=EventName.ORG_CREATED,
            entity="org",
            entity_id=org_id,
            op="create",
            data={
                "org_id": org_id,
                "name": name,
                "kind": "vendor",
                "sponsor_id": sponsor_row.id,
                "contract_start": contract_start,
                "contract_end": contract_end,
                "networks": [str(n) for n in nets],
                "seat_limit": seat_limit,
                "ceiling_level": ceiling_level.label,
                "ceiling_compartments": sorted(comps),
                "security_review_at": security_review_at,
                "agreement_ref": agreement_ref,
            },
        )
    return org_id


def set_vendor_status(
    d: Directory, ref: str, target: VendorStatus, *, now: float, reason: str = ""
) -> None:
    from garrison.store.directory import _lookup, _record

    with write_transaction(d.engine) as conn:
        row = _lookup(conn, schema.orgs, ref, "vendor")
        if row.kind != OrgKind.VENDOR.value:
            raise BadRequest(f"{row.name!r} is not a vendor")
        check_transition(VendorStatus(row.status), target)
        if target is VendorStatus.ACTIVE and now >= (row.contract_end or 0):
            raise BadRequest("the contract has ended; extend it first", rule="vendor-contract")
        conn.execute(
            sa.update(schema.orgs).where(schema.orgs.c.id == row.id).values(status=target.value)
        )
        revoked = disabled = 0
        if target is VendorStatus.OFFBOARDED:
            p, c = schema.principals, schema.credentials
            ids = sa.select(p.c.id).where(p.c.org_id == row.id)
            revoked = conn.execute(
                sa.update(c)
                .where(c.c.principal_id.in_(ids), c.c.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
            disabled = conn.execute(
                sa.update(p)
                .where(p.c.org_id == row.id, p.c.status == Status.ACTIVE.value)
                .values(status=Status.DISABLED.value)
            ).rowcount
        _record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            name=_STATUS_EVENTS[target],
            entity="org",
            entity_id=row.id,
            op=target.value,
            data={
                "org_id": row.id,
                "name": row.name,
                "from": row.status,
                "to": target.value,
                "reason": reason,
                "keys_revoked": revoked,
                "principals_disabled": disabled,
            },
        )


_STATUS_EVENTS = {
    VendorStatus.ACTIVE: EventName.VENDOR_ACTIVATED,
    VendorStatus.SUSPENDED: EventName.VENDOR_SUSPENDED,
    VendorStatus.EXPIRED: EventName.VENDOR_EXPIRED,
    VendorStatus.OFFBOARDED: EventName.VENDOR_OFFBOARDED,
}  # onboarding is never a target (TRANSITIONS), so it has no event


def expire_ended_contracts(d: Directory, now: float | None = None) -> list[str]:
    """Move every vendor whose contract has ended to ``expired`` (the contract clock).

    The data plane refuses a vendor's people the instant the contract ends, with or without
    this; it makes the directory say so and records the event."""
    now = time.time() if now is None else now
    o = schema.orgs
    with d.engine.connect() as conn:
        due = [
            r.name
            for r in conn.execute(
                sa.select(o.c.name).where(
                    o.c.kind == OrgKind.VENDOR.value,
                    o.c.status.in_([VendorStatus.ACTIVE.value, VendorStatus.SUSPENDED.value]),
                    o.c.contract_end <= now,
                )
            )
        ]
    done = []
    for name in due:
        try:
            set_vendor_status(d, name, VendorStatus.EXPIRED, now=now, reason="contract ended")
        except IllegalTransition:
            continue  # another gateway process's clock got there first
        done.append(name)
    return done


def update_vendor(
    d: Directory,
    ref: str,
    *,
    now: float,
    contract_end: float | None = None,
    networks: Iterable[str] | None = None,
    seat_limit: int | None = None,
    ceiling_level: Level | None = None,
    ceiling_compartments: Iterable[str] | None = None,
    security_review_at: float | None = None,
    agreement_ref: str | None = None,
) -> dict[str, Any]:
    """Change a vendor's terms. Narrowing is refused while something is in the way (naming
    it); shortening the contract clips every live key's expiry to the new end."""
    from garrison.store.directory import (
        NAME_MAX_CHARS,
        _lookup,
        _record,
        check_compartments,
        check_networks,
    )

    p, c = schema.principals, schema.credentials
    with write_transaction(d.engine) as conn:
        row = _lookup(conn, schema.orgs, ref, "vendor")
        if row.kind != OrgKind.VENDOR.value:
            raise BadRequest(f"{row.name!r} is not a vendor")
        terms = terms_of(row)
        if terms.status is VendorStatus.OFFBOARDED:
            raise BadRequest("an offboarded vendor cannot be changed")
        values: dict[str, Any] = {}
        people = conn.execute(
            sa.select(p).where(p.c.org_id == row.id, p.c.status == Status.ACTIVE.value)
        ).all()
        # Every unrevoked key of the vendor's people, disabled ones included: re-enabling a
        # principal must never bring back a key outside the vendor's current terms.
        everyone = sa.select(p.c.id).where(p.c.org_id == row.id)
        live_keys = conn.execute(
            sa.select(c).where(c.c.principal_id.in_(everyone), c.c.revoked_at.is_(None))
        ).all()
        if contract_end is not None:
            if contract_end <= terms.contract_start:
                raise BadRequest("the contract must end after it starts")
            if contract_end <= now:
                raise BadRequest("the new contract end is in the past (suspend or offboard)")
            values["contract_end"] = contract_end
        if networks is not None:
            nets = check_networks(networks, "vendor")
            if not nets:
                raise BadRequest("a vendor needs at least one allowed network")
            narrowed = VendorTerms(**{**_terms_fields(terms), "networks": nets})
            outside = [
                k.id
                for k in live_keys
                if not all(narrowed.covers_network(n) for n in parse_networks(k.networks))
            ]
            if outside:
                raise BadRequest(
                    "live keys would fall outside the new networks: "
                    f"{', '.join(outside)} (revoke or re-issue them first)",
                    rule="vendor-networks",
                )
            values["networks"] = _json(nets)
        if seat_limit is not None:
            if not 1 <= seat_limit <= SEAT_LIMIT_MAX:
                raise BadRequest(f"seat limit must be between 1 and {SEAT_LIMIT_MAX}")
            if seat_limit < len(people):
                raise BadRequest(
                    f"{len(people)} principals are active; disable some "
                    f"before lowering the limit to {seat_limit}",
                    rule="vendor-seats",
                )
            values["seat_limit"] = seat_limit
        if ceiling_level is not None or ceiling_compartments is not None:
            level = terms.ceiling_level if ceiling_level is None else ceiling_level
            comps = (
                terms.ceiling_compartments
                if ceiling_compartments is None
                else check_compartments(ceiling_compartments)
            )
            above = [
                x.name
                for x in people
                if not (Level(x.clearance) <= level and parse_compartments(x.compartments) <= comps)
            ]
            if above:
                raise BadRequest(
                    "these principals hold more than the new ceiling: "
                    f"{', '.join(above)} (lower or disable them first)",
                    rule="vendor-ceiling",
                )
            values["ceiling_level"] = int(level)
            values["ceiling_compartments"] = _json(comps)
        if security_review_at is not None:
            values["security_review_at"] = security_review_at
        if agreement_ref is not None:
            if len(agreement_ref) > NAME_MAX_CHARS:
                raise BadRequest(f"agreement reference is longer than {NAME_MAX_CHARS} characters")
            values["agreement_ref"] = agreement_ref
        if not values:
            raise BadRequest("nothing to change")
        conn.execute(sa.update(schema.orgs).where(schema.orgs.c.id == row.id).values(**values))
        clipped = 0
        if contract_end is not None:
            ids = [k.id for k in live_keys if k.expires_at is None or k.expires_at > contract_end]
            if ids:
                clipped = conn.execute(
                    sa.update(c).where(c.c.id.in_(ids)).values(expires_at=contract_end)
                ).rowcount
        changes = {
            k: orjson.loads(v) if k in ("networks", "ceiling_compartments") else v
            for k, v in values.items()
        }
        _record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            name=EventName.VENDOR_UPDATED,
            entity="org",
            entity_id=row.id,
            op="update",
            data={"org_id": row.id, "name": row.name, "changes": changes, "keys_clipped": clipped},
        )
    return changes


def _terms_fields(terms: VendorTerms) -> dict[str, Any]:
    return {f: getattr(terms, f) for f in VendorTerms.__dataclass_fields__}
