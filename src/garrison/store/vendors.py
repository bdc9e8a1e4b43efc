"""Org and vendor writes, and the vendor rules every directory write obeys (the pure checks
are ``domain.directory_rules``; this module applies them to what is stored).

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
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.payloads_directory import (
    OrgCreated,
    VendorActivated,
    VendorExpired,
    VendorOffboarded,
    VendorStatusChanged,
    VendorSuspended,
    VendorUpdated,
)
from garrison.domain import (
    IllegalTransition,
    Level,
    OrgKind,
    Status,
    VendorStatus,
    VendorTerms,
    check_transition,
)
from garrison.domain.directory_rules import ISSUING, check_ceiling, check_seat_limit
from garrison.domain.directory_rules import SEAT_LIMIT_MAX as SEAT_LIMIT_MAX

# ``store.keys`` applies the vendor key terms through this module (``vendors.key_terms``),
# where the concurrency tests pause it.
from garrison.domain.directory_rules import key_terms as key_terms
from garrison.domain.names import check_compartments, check_name, check_networks, check_text
from garrison.errors import BadRequest
from garrison.store import journal, schema
from garrison.store.columns import json_list, parse_compartments, parse_networks, terms_of
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import lookup, new_id, unique


def vendor_status(conn: sa.Connection, ref: str) -> VendorStatus:
    """The status of the vendor ``ref`` (id or name); NotFound as any lookup."""
    row = lookup(conn, schema.orgs, ref, "vendor")
    if row.kind != OrgKind.VENDOR.value:
        raise BadRequest(f"{row.name!r} is not a vendor")
    return VendorStatus(row.status)


def vendor_of(conn: sa.Connection, org_id: str) -> VendorTerms | None:
    row = conn.execute(sa.select(schema.orgs).where(schema.orgs.c.id == org_id)).first()
    if row is None or row.kind != OrgKind.VENDOR.value:
        return None
    return terms_of(row)


def check_person(
    conn: sa.Connection,
    terms: VendorTerms,
    org_id: str,
    clearance: Level,
    compartments: frozenset[str],
    *,
    adding_seat: bool,
) -> None:
    if terms.status not in ISSUING:
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


def _active_seats(conn: sa.Connection, org_id: str) -> int:
    p = schema.principals
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                p.c.org_id == org_id, p.c.status == Status.ACTIVE.value
            )
        ).scalar_one()
    )


def create_org(d: Journal, name: str, kind: OrgKind, *, now: float) -> str:
    """An internal org. Vendors carry terms: ``create_vendor``."""
    if kind is OrgKind.VENDOR:
        raise BadRequest(
            "a vendor needs its terms (sponsor, contract, networks, seats, "
            "ceiling): use create_vendor / `garrison vendor add`"
        )
    name = check_name(name, "org name")
    org_id = new_id("org")
    with write_transaction(d.engine) as conn:
        unique(conn, schema.orgs, name, "org")
        conn.execute(
            sa.insert(schema.orgs).values(id=org_id, name=name, kind=kind.value, created_at=now)
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=OrgCreated(org_id=org_id, name=name, kind=kind.value),
            entity="org",
            entity_id=org_id,
            op="create",
        )
    return org_id


def create_vendor(
    d: Journal,
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
    name = check_name(name, "vendor name")
    nets = check_networks(networks, "vendor")
    comps = check_compartments(ceiling_compartments)
    if not nets:
        raise BadRequest("a vendor needs at least one allowed network (its egress ranges)")
    if contract_end <= contract_start:
        raise BadRequest("the contract must end after it starts")
    if contract_end <= now:
        raise BadRequest("the contract end is in the past")
    check_seat_limit(seat_limit)
    check_text(agreement_ref, "agreement reference")
    org_id = new_id("org")
    with write_transaction(d.engine) as conn:
        unique(conn, schema.orgs, name, "org")
        sponsor_row = lookup(conn, schema.principals, sponsor, "sponsor")
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
                networks=json_list(nets),
                seat_limit=seat_limit,
                ceiling_level=int(ceiling_level),
                ceiling_compartments=json_list(comps),
                security_review_at=security_review_at,
                agreement_ref=agreement_ref,
                status=VendorStatus.ONBOARDING.value,
            )
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=OrgCreated(
                org_id=org_id,
                name=name,
                kind="vendor",
                sponsor_id=sponsor_row.id,
                contract_start=contract_start,
                contract_end=contract_end,
                networks=[str(n) for n in nets],
                seat_limit=seat_limit,
                ceiling_level=ceiling_level.label,
                ceiling_compartments=sorted(comps),
                security_review_at=security_review_at,
                agreement_ref=agreement_ref,
            ),
            entity="org",
            entity_id=org_id,
            op="create",
        )
    return org_id


def set_vendor_status(
    d: Journal, ref: str, target: VendorStatus, *, now: float, reason: str = ""
) -> None:
    with write_transaction(d.engine) as conn:
        row = lookup(conn, schema.orgs, ref, "vendor")
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
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=_STATUS_EVENTS[target](
                org_id=row.id,
                name=row.name,
                from_status=row.status,
                to=target.value,
                reason=reason,
                keys_revoked=revoked,
                principals_disabled=disabled,
            ),
            entity="org",
            entity_id=row.id,
            op=target.value,
        )


_STATUS_EVENTS: dict[VendorStatus, type[VendorStatusChanged]] = {
    VendorStatus.ACTIVE: VendorActivated,
    VendorStatus.SUSPENDED: VendorSuspended,
    VendorStatus.EXPIRED: VendorExpired,
    VendorStatus.OFFBOARDED: VendorOffboarded,
}  # onboarding is never a target (TRANSITIONS), so it has no event


def expire_ended_contracts(d: Journal, now: float | None = None) -> list[str]:
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
    d: Journal,
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
    p, c = schema.principals, schema.credentials
    with write_transaction(d.engine) as conn:
        row = lookup(conn, schema.orgs, ref, "vendor")
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
            values["networks"] = json_list(nets)
        if seat_limit is not None:
            check_seat_limit(seat_limit)
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
            values["ceiling_compartments"] = json_list(comps)
        if security_review_at is not None:
            values["security_review_at"] = security_review_at
        if agreement_ref is not None:
            check_text(agreement_ref, "agreement reference")
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
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=VendorUpdated(
                org_id=row.id, name=row.name, changes=changes, keys_clipped=clipped
            ),
            entity="org",
            entity_id=row.id,
            op="update",
        )
    return changes


def _terms_fields(terms: VendorTerms) -> dict[str, Any]:
    return {f: getattr(terms, f) for f in VendorTerms.__dataclass_fields__}
