"""Principals: creating one, and changes to one (clearance, compartments, admin roles and
status).

Every rule is checked inside the writing transaction and refused with a ``BadRequest``
naming it; nothing is written unless all of them hold:

* a vendor principal stays within the vendor's ceiling, holds only vendor roles, and
  re-enabling one takes a seat (the seat limit applies);
* a service account holds no admin role, and names its owner, an active person;
* the last active security-admin cannot be disabled or lose the role (no lock-out).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads_directory import PrincipalCreated, PrincipalUpdated
from garrison.domain import Level, PrincipalKind, Status
from garrison.domain.directory_rules import check_ceiling, check_roles, check_service_roles
from garrison.domain.names import check_compartments, check_name
from garrison.domain.roles import Role
from garrison.domain.two_person import principal_change_is_sensitive
from garrison.errors import BadRequest, Conflict
from garrison.store import journal, schema, vendors
from garrison.store.columns import json_list, parse_compartments
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import lookup, new_id, unique

SECURITY_ADMIN = Role.SECURITY_ADMIN.value


def create_principal(
    d: Journal,
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
    with write_transaction(d.engine) as conn:
        org_row = lookup(conn, schema.orgs, org, "org")
        unique(conn, schema.principals, name, "principal")
        terms = vendors.vendor_of(conn, org_row.id)
        role_set = check_roles(roles, vendor=terms is not None)
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
                compartments=json_list(comps),
                status=Status.ACTIVE.value,
                created_at=now,
                roles=json_list(role_set),
                owner_id=owner_id,
            )
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=PrincipalCreated(
                name=name,
                org_id=org_row.id,
                kind=kind.value,
                roles=sorted(role_set),
                clearance=clearance.label,
                compartments=sorted(comps),
                owner_id=owner_id if owner_id else ABSENT,
            ),
            entity="principal",
            entity_id=principal_id,
            op="create",
            principal_id=principal_id,
        )
    return principal_id


def check_owner(conn: sa.Connection, kind: PrincipalKind, owner: str | None) -> str | None:
    """A service account's owner is an active person (accountable for it); a person has
    none."""
    if owner is None:
        return None
    if kind is not PrincipalKind.SERVICE:
        raise BadRequest("only a service account has an owner", rule="owner")
    row = lookup(conn, schema.principals, owner, "owner")
    if row.kind != PrincipalKind.HUMAN.value or row.status != Status.ACTIVE.value:
        raise BadRequest(f"the owner {row.name!r} must be an active person", rule="owner")
    return str(row.id)


def update_principal(
    d: Journal,
    ref: str,
    *,
    now: float,
    clearance: Level | None = None,
    compartments: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    status: Status | None = None,
    dry_run: bool = False,
    forbid_sensitive: bool = False,
) -> dict[str, Any]:
    """Apply the given changes; returns ``{field: [before, after]}`` for what changed.
    ``dry_run``: check every rule and report the changes, but write nothing (a two-person
    proposal is checked this way before it waits for its second admin)."""
    comps = check_compartments(compartments) if compartments is not None else None
    with write_transaction(d.engine) as conn:
        row = lookup(conn, schema.principals, ref, "principal")
        terms = vendors.vendor_of(conn, row.org_id)
        old_level = Level(row.clearance)
        old_comps = parse_compartments(row.compartments)
        old_roles = parse_compartments(row.roles)
        new_level = old_level if clearance is None else clearance
        new_comps = old_comps if comps is None else comps
        new_roles = old_roles
        if roles is not None:
            new_roles = check_roles(roles, vendor=terms is not None)
            check_service_roles(PrincipalKind(row.kind), new_roles)
        new_status = Status(row.status) if status is None else status

        enabling = new_status is Status.ACTIVE and row.status != Status.ACTIVE.value
        if terms is not None and enabling:
            vendors.check_person(conn, terms, row.org_id, new_level, new_comps, adding_seat=True)
        elif terms is not None and (new_level != old_level or new_comps != old_comps):
            # Only a change of access is held to the ceiling; taking a role away or disabling
            # someone already above a since-lowered ceiling stays possible.
            check_ceiling(terms, new_level, new_comps)
        losing_admin = SECURITY_ADMIN in old_roles and row.status == Status.ACTIVE.value
        if losing_admin and (SECURITY_ADMIN not in new_roles or new_status is not Status.ACTIVE):
            _keep_one_security_admin(conn, row.id)

        changes: dict[str, Any] = {}
        values: dict[str, Any] = {}
        if new_level != old_level:
            changes["clearance"] = [old_level.label, new_level.label]
            values["clearance"] = int(new_level)
        if new_comps != old_comps:
            changes["compartments"] = [sorted(old_comps), sorted(new_comps)]
            values["compartments"] = json_list(new_comps)
        if new_roles != old_roles:
            changes["roles"] = [sorted(old_roles), sorted(new_roles)]
            values["roles"] = json_list(new_roles)
        if new_status.value != row.status:
            changes["status"] = [row.status, new_status.value]
            values["status"] = new_status.value
        if forbid_sensitive and principal_change_is_sensitive(changes, held_roles=old_roles):
            # Checked again under the write lock: the principal changed since the caller
            # judged this change harmless (compare and set).
            raise Conflict(f"{row.name!r} changed meanwhile; this change now needs two admins")
        if not values or dry_run:
            return changes
        conn.execute(
            sa.update(schema.principals).where(schema.principals.c.id == row.id).values(**values)
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=PrincipalUpdated(name=row.name, changes=changes),
            entity="principal",
            entity_id=row.id,
            op="update",
            principal_id=row.id,
        )
    return changes


def _keep_one_security_admin(conn: sa.Connection, leaving_id: str) -> None:
    p = schema.principals
    others = conn.execute(
        sa.select(p.c.roles).where(p.c.status == Status.ACTIVE.value, p.c.id != leaving_id)
    )
    if not any(SECURITY_ADMIN in parse_compartments(r.roles) for r in others):
        raise BadRequest(
            "this is the last active security-admin; give the role to someone else first",
            rule="last-security-admin",
        )
