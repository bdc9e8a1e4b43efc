"""Reads of the directory for the admin API: lists and the reports a security team reads.

Every function takes a connection and returns plain JSON-ready data. Nothing here returns a
secret: credentials appear by id, upstream credentials only as "sealed" or "none".
``orgs`` arguments restrict a read to those org ids (a vendor-manager's scope); ``None``
means every org.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.domain import Level, OrgKind, Status
from garrison.domain.upstream_tls import TLS_FIELDS
from garrison.errors import NotFound
from garrison.store import schema
from garrison.store.json_paths import distinct_list, record_field

# Distinct source addresses listed per key in reports: enough to see a key roaming, short
# enough to read (the audit log has them all).
KEY_SOURCES_SHOWN = 20
# A seat with no call for this long is reported as dormant (the default of --dormant-days).
DORMANT_DAYS = 30

o, p, c, m, a = (
    schema.orgs,
    schema.principals,
    schema.credentials,
    schema.models,
    schema.audit_events,
)


def _in_scope(column: Any, orgs: Collection[str] | None) -> Any:
    return sa.true() if orgs is None else column.in_(list(orgs))


def key_state(row: Any, now: float) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def days_left(end: float | None, now: float) -> int:
    return max(0, int(((end or now) - now) // 86400))


def find(conn: sa.Connection, table: sa.Table, ref: str, what: str) -> Any:
    """The row named or identified by ``ref``, or ``NotFound`` naming what was asked for."""
    row = conn.execute(
        sa.select(table).where(sa.or_(table.c.id == ref, table.c.name == ref))
    ).first()
    if row is None:
        raise NotFound(f"no {what} {ref!r}", public_message=f"No {what} {ref!r}.")
    return row


def org_of(conn: sa.Connection, kind: str, ref: str) -> str | None:
    """The org a principal, key or org reference belongs to (None: no such thing)."""
    if kind == "org":
        row = conn.execute(sa.select(o.c.id).where(sa.or_(o.c.id == ref, o.c.name == ref)))
    elif kind == "principal":
        row = conn.execute(sa.select(p.c.org_id).where(sa.or_(p.c.id == ref, p.c.name == ref)))
    elif kind == "credential":
        # A key, or a sign-in session (whose id names a credential for locks).
        ss = schema.sessions
        row = conn.execute(
            sa.union(
                sa.select(p.c.org_id).join(c, c.c.principal_id == p.c.id).where(c.c.id == ref),
                sa.select(p.c.org_id).join(ss, ss.c.principal_id == p.c.id).where(ss.c.id == ref),
            )
        )
    else:  # pragma: no cover - callers pass one of the three
        raise ValueError(kind)
    value = row.scalar()
    return None if value is None else str(value)


def list_orgs(conn: sa.Connection, orgs: Collection[str] | None = None) -> list[dict[str, Any]]:
    stmt = sa.select(o).where(_in_scope(o.c.id, orgs)).order_by(o.c.name)
    return [
        {"id": r.id, "name": r.name, "kind": r.kind, "created_at": r.created_at}
        for r in conn.execute(stmt)
    ]


def list_vendors(
    conn: sa.Connection, now: float, orgs: Collection[str] | None = None
) -> list[dict[str, Any]]:
    stmt = (
        sa.select(o)
        .where(o.c.kind == OrgKind.VENDOR.value, _in_scope(o.c.id, orgs))
        .order_by(o.c.name)
    )
    return [
        {
            "id": r.id,
            "name": r.name,
            "status": r.status,
            "contract_end": r.contract_end,
            "days_left": days_left(r.contract_end, now),
            "seat_limit": r.seat_limit,
            "ceiling": Level(r.ceiling_level or 0).label,
        }
        for r in conn.execute(stmt)
    ]


def _principal_dict(r: Any, org_name: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "org": org_name,
        "org_id": r.org_id,
        "kind": r.kind,
        "clearance": Level(r.clearance).label,
        "compartments": orjson.loads(r.compartments),
        "roles": orjson.loads(r.roles),
        "status": r.status,
        "created_at": r.created_at,
    }


def list_principals(
    conn: sa.Connection,
    orgs: Collection[str] | None = None,
    *,
    org: str | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    stmt = (
        sa.select(p, o.c.name.label("org_name"))
        .join(o, o.c.id == p.c.org_id)
        .where(_in_scope(p.c.org_id, orgs))
        .order_by(p.c.name)
    )
    if org is not None:
        stmt = stmt.where(sa.or_(o.c.id == org, o.c.name == org))
    if kind is not None:
        stmt = stmt.where(p.c.kind == kind)
    return [_principal_dict(r, r.org_name) for r in conn.execute(stmt)]


def caller_address_sql(record: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The caller's address a stored record names, whichever encoding version wrote it
    (``client_address``; ``address`` before version 2): ``audit.events.caller_address``."""
    data = record_field(record, "data", "client_address")
    return sa.func.coalesce(data, record_field(record, "data", "address"))


def _key_usage(conn: sa.Connection, key_ids: Iterable[str]) -> dict[str, tuple[float, list[str]]]:
    """Last allowed call and distinct source addresses of each key (the subject index)."""
    ids = list(key_ids)
    if not ids:
        return {}
    address = caller_address_sql(a.c.record)
    stmt = (
        sa.select(a.c.credential_id, sa.func.max(a.c.at), distinct_list(address))
        .where(a.c.credential_id.in_(ids), a.c.name == "request.allowed")
        .group_by(a.c.credential_id)
    )
    usage = {}
    for cred_id, last, sources in conn.execute(stmt):
        listed = sorted(sources.split(",")) if sources else []
        usage[cred_id] = (last, listed[:KEY_SOURCES_SHOWN])
    return usage


def _keys_of(
    conn: sa.Connection, principal_ids: list[str], now: float, *, show_canary: bool = True
) -> list[dict[str, Any]]:
    rows = list(
        conn.execute(
            sa.select(c).where(c.c.principal_id.in_(principal_ids)).order_by(c.c.created_at)
        )
    )
    usage = _key_usage(conn, (r.id for r in rows))
    out = []
    for r in rows:
        last, sources = usage.get(r.id, (None, []))
        out.append(
            {
                "id": r.id,
                "principal_id": r.principal_id,
                "state": key_state(r, now),
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "revoked_at": r.revoked_at,
                "networks": orjson.loads(r.networks),
                "note": r.note,
                "cert_thumbprint": r.cert_thumbprint,
                **({"canary": bool(r.canary)} if show_canary else {}),
                "last_used": last,
                "sources": sources,
            }
        )
    return out


def principal_report(
    conn: sa.Connection, ref: str, now: float, orgs: Collection[str] | None = None
) -> dict[str, Any]:
    row = conn.execute(
        sa.select(p, o.c.name.label("org_name"))
        .join(o, o.c.id == p.c.org_id)
        .where(sa.or_(p.c.id == ref, p.c.name == ref), _in_scope(p.c.org_id, orgs))
    ).first()
    if row is None:
        raise NotFound(f"no principal {ref!r}", public_message=f"No principal {ref!r}.")
    report = _principal_dict(row, row.org_name)
    # A planted canary must look like any other key to a scoped reader (a vendor-manager
    # could be the intruder): only readers of every org see the flag.
    keys = _keys_of(conn, [row.id], now, show_canary=orgs is None)
    report["keys"] = keys
    used = [k["last_used"] for k in keys if k["last_used"] is not None]
    report["last_used"] = max(used) if used else None
    return report


def list_keys(
    conn: sa.Connection,
    now: float,
    orgs: Collection[str] | None = None,
    *,
    principal: str | None = None,
) -> list[dict[str, Any]]:
    stmt = (
        sa.select(c, p.c.name.label("principal"))
        .join(p, p.c.id == c.c.principal_id)
        .where(_in_scope(p.c.org_id, orgs))
        .order_by(c.c.created_at)
    )
    if principal is not None:
        stmt = stmt.where(sa.or_(p.c.id == principal, p.c.name == principal))
    return [
        {
            "id": r.id,
            "principal": r.principal,
            "principal_id": r.principal_id,
            "state": key_state(r, now),
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "networks": orjson.loads(r.networks),
            "note": r.note,
            "provenance": r.provenance,
            "created_by": r.created_by,
            "cert_thumbprint": r.cert_thumbprint,
            **({"canary": bool(r.canary)} if orgs is None else {}),
        }
        for r in conn.execute(stmt)
    ]


def _model_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "upstream_url": r.upstream_url,
        "upstream_model": r.upstream_model,
        "api": r.api,
        "auth_style": r.auth_style,
        "level": Level(r.level).label,
        "compartments": orjson.loads(r.compartments),
        "upstream_key": "sealed" if r.upstream_key_sealed is not None else "none",
        "extra_fields": orjson.loads(r.extra_fields or "[]"),
        **(orjson.loads(r.upstream_tls) if r.upstream_tls else dict.fromkeys(TLS_FIELDS)),
        "created_at": r.created_at,
    }


def list_models(conn: sa.Connection) -> list[dict[str, Any]]:
    return [_model_dict(r) for r in conn.execute(sa.select(m).order_by(m.c.name))]


def show_model(conn: sa.Connection, ref: str) -> dict[str, Any]:
    return _model_dict(find(conn, m, ref, "model"))


def vendor_report(
    conn: sa.Connection,
    ref: str,
    now: float,
    *,
    dormant_days: int = DORMANT_DAYS,
    orgs: Collection[str] | None = None,
) -> dict[str, Any]:
    """Terms, seats, every key with its last use and source addresses, dormant accounts."""
    org = conn.execute(
        sa.select(o).where(sa.or_(o.c.id == ref, o.c.name == ref), _in_scope(o.c.id, orgs))
    ).first()
    if org is None or org.kind != OrgKind.VENDOR.value:
        raise NotFound(f"no vendor {ref!r}", public_message=f"No vendor {ref!r}.")
    sponsor = conn.execute(sa.select(p.c.name).where(p.c.id == org.sponsor_id)).scalar()
    people_rows = list(conn.execute(sa.select(p).where(p.c.org_id == org.id).order_by(p.c.name)))
    keys = _keys_of(conn, [r.id for r in people_rows], now, show_canary=orgs is None)
    people = []
    dormant = []
    seats = 0
    for prn in people_rows:
        seats += prn.status == Status.ACTIVE.value
        own = [k for k in keys if k["principal_id"] == prn.id]
        used = [k["last_used"] for k in own if k["last_used"] is not None]
        quiet_since = max(used) if used else prn.created_at
        if prn.status == Status.ACTIVE.value and now - quiet_since > dormant_days * 86400:
            dormant.append(prn.name)
        people.append(
            {
                "name": prn.name,
                "status": prn.status,
                "clearance": Level(prn.clearance).label,
                "last_used": max(used) if used else None,
                "keys": own,
            }
        )
    return {
        "id": org.id,
        "name": org.name,
        "terms": {
            "status": org.status,
            "sponsor": sponsor,
            "contract_start": org.contract_start,
            "contract_end": org.contract_end,
            "seat_limit": org.seat_limit,
            "ceiling": Level(org.ceiling_level or 0).label,
            "ceiling_compartments": orjson.loads(org.ceiling_compartments),
            "networks": orjson.loads(org.networks),
            "agreement_ref": org.agreement_ref,
            "security_review_at": org.security_review_at,
        },
        "contract_days_left": days_left(org.contract_end, now),
        "seats_used": seats,
        "dormant_days": dormant_days,
        "principals": people,
        "dormant": dormant,
    }
