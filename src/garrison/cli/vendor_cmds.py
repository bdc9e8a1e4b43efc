"""``garrison vendor …``: vendors as first-class objects, and the report a security team reads."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from garrison.bootstrap import open_directory
from garrison.cli.options import config_option, json_option
from garrison.config import load_settings
from garrison.domain import Level, OrgKind, VendorStatus
from garrison.store import make_engine, schema

console = Console()
# A seat with no call for this long is reported as dormant (a default, --dormant-days).
DORMANT_DAYS = 30


def _when(text: str | None, *, default: float | None = None, what: str) -> float:
    if text is None:
        if default is None:
            raise click.BadParameter(f"{what} is required")
        return default
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{what}: {text!r} is not an ISO date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _fmt(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@click.group()
def vendor() -> None:
    """Vendors: sponsor, contract, networks, seats, ceiling, lifecycle."""


@vendor.command("add")
@click.argument("name")
@click.option("--sponsor", required=True, help="Internal principal accountable for the vendor.")
@click.option("--contract-start", default=None, help="ISO date (default: now).")
@click.option("--contract-end", required=True, help="ISO date; people and keys stop at it.")
@click.option("--network", "networks", multiple=True, required=True, help="Egress CIDR; repeat.")
@click.option("--seats", type=int, required=True, help="Most active principals at once.")
@click.option(
    "--ceiling",
    default="internal",
    show_default=True,
    type=click.Choice([lv.label for lv in Level]),
    help="Highest clearance allowed.",
)
@click.option("--ceiling-compartment", "compartments", multiple=True)
@click.option("--agreement", default="", help="Agreement reference (MSA, NDA …).")
@click.option("--security-review", default=None, help="ISO date of the last security review.")
@config_option
def vendor_add(
    name: str,
    sponsor: str,
    contract_start: str | None,
    contract_end: str,
    networks: tuple[str, ...],
    seats: int,
    ceiling: str,
    compartments: tuple[str, ...],
    agreement: str,
    security_review: str | None,
    config_path: Path,
) -> None:
    """Add a vendor (status onboarding; `vendor activate` opens it)."""
    now = time.time()
    org_id = open_directory(load_settings(config_path)).create_vendor(
        name,
        sponsor=sponsor,
        contract_start=_when(contract_start, default=now, what="--contract-start"),
        contract_end=_when(contract_end, what="--contract-end"),
        networks=networks,
        seat_limit=seats,
        ceiling_level=Level.parse(ceiling),
        ceiling_compartments=compartments,
        security_review_at=_when(security_review, what="--security-review")
        if security_review
        else None,
        agreement_ref=agreement,
        now=now,
    )
    click.echo(org_id)


@vendor.command("update")
@click.argument("vendor_ref")
@click.option("--contract-end", default=None, help="ISO date; shortening clips live keys.")
@click.option("--network", "networks", multiple=True, help="Replace the egress CIDRs; repeat.")
@click.option("--seats", type=int, default=None)
@click.option("--ceiling", default=None, type=click.Choice([lv.label for lv in Level]))
@click.option(
    "--ceiling-compartment",
    "compartments",
    multiple=True,
    help="Replace the ceiling compartments; repeat.",
)
@click.option("--agreement", default=None)
@click.option("--security-review", default=None, help="ISO date of the last security review.")
@config_option
def vendor_update(
    vendor_ref: str,
    contract_end: str | None,
    networks: tuple[str, ...],
    seats: int | None,
    ceiling: str | None,
    compartments: tuple[str, ...],
    agreement: str | None,
    security_review: str | None,
    config_path: Path,
) -> None:
    """Change a vendor's terms; narrowing is refused while something is in the way."""
    changes = open_directory(load_settings(config_path)).update_vendor(
        vendor_ref,
        now=time.time(),
        contract_end=_when(contract_end, what="--contract-end") if contract_end else None,
        networks=networks or None,
        seat_limit=seats,
        ceiling_level=Level.parse(ceiling) if ceiling else None,
        ceiling_compartments=compartments or None,
        security_review_at=_when(security_review, what="--security-review")
        if security_review
        else None,
        agreement_ref=agreement,
    )
    click.echo(orjson.dumps(changes).decode())


def _status_command(name: str, target: VendorStatus, help_text: str) -> None:
    @vendor.command(name, help=help_text)
    @click.argument("vendor_ref")
    @click.option("--reason", default="", help="Why (kept in the audit log).")
    @config_option
    def command(vendor_ref: str, reason: str, config_path: Path) -> None:
        open_directory(load_settings(config_path)).set_vendor_status(
            vendor_ref, target, now=time.time(), reason=reason
        )
        click.echo(f"{vendor_ref}: {target.value}")


_status_command("activate", VendorStatus.ACTIVE, "Open a vendor (or lift a suspension).")
_status_command("suspend", VendorStatus.SUSPENDED, "Stop a vendor's people and keys at once.")
_status_command(
    "offboard",
    VendorStatus.OFFBOARDED,
    "End the relationship: revoke every key, disable every principal.",
)


def _rows(config_path: Path, stmt: Any) -> list[Any]:
    engine = make_engine(load_settings(config_path).database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(stmt))
    finally:
        engine.dispose()


@vendor.command("list")
@config_option
@json_option
def vendor_list(config_path: Path, as_json: bool) -> None:
    o = schema.orgs
    now = time.time()
    rows = [
        {
            "id": r.id,
            "name": r.name,
            "status": r.status,
            "contract_end": _fmt(r.contract_end),
            "days_left": max(0, int(((r.contract_end or now) - now) // 86400)),
            "seats": r.seat_limit,
            "ceiling": Level(r.ceiling_level or 0).label,
        }
        for r in _rows(
            config_path, sa.select(o).where(o.c.kind == OrgKind.VENDOR.value).order_by(o.c.name)
        )
    ]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="Vendors")
    for column in ("id", "name", "status", "contract_end", "days_left", "seats", "ceiling"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in row))
    console.print(table)


@vendor.command("show")
@click.argument("vendor_ref")
@click.option("--dormant-days", default=DORMANT_DAYS, show_default=True, type=int)
@config_option
@json_option
def vendor_show(vendor_ref: str, dormant_days: int, config_path: Path, as_json: bool) -> None:
    """Terms, seats, keys with their last use and source networks, dormant accounts."""
    settings = load_settings(config_path)
    engine = make_engine(settings.database_url)
    now = time.time()
    try:
        with engine.connect() as conn:
            report = _report(conn, vendor_ref, now, dormant_days)
    finally:
        engine.dispose()
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    t = report["terms"]
    console.print(
        f"[bold]{report['name']}[/bold] ({report['id']}) — {t['status']}", highlight=False
    )
    console.print(
        f"sponsor {t['sponsor']}   contract {_fmt(t['contract_start'])} → "
        f"{_fmt(t['contract_end'])} ({report['contract_days_left']} days left)   "
        f"seats {report['seats_used']}/{t['seat_limit']}   ceiling {t['ceiling']} "
        f"{t['ceiling_compartments']}   networks {', '.join(t['networks'])}",
        highlight=False,
    )
    table = Table(title="Principals and keys")
    for column in (
        "principal",
        "status",
        "clearance",
        "key",
        "key state",
        "last use",
        "source addresses",
    ):
        table.add_column(column)
    for p in report["principals"]:
        keys = p["keys"] or [{"id": "-", "state": "-", "last_used": None, "sources": []}]
        for k in keys:
            table.add_row(
                p["name"],
                p["status"],
                p["clearance"],
                k["id"],
                k["state"],
                _fmt(k["last_used"]),
                ", ".join(k["sources"]),
            )
    console.print(table)
    dormant = report["dormant"]
    console.print(
        f"dormant (no call in {dormant_days} days): {', '.join(dormant) or 'none'}", highlight=False
    )


def _report(conn: sa.Connection, ref: str, now: float, dormant_days: int) -> dict[str, Any]:
    o, p, c, a = schema.orgs, schema.principals, schema.credentials, schema.audit_events
    org = conn.execute(sa.select(o).where(sa.or_(o.c.id == ref, o.c.name == ref))).first()
    if org is None or org.kind != OrgKind.VENDOR.value:
        raise click.ClickException(f"no vendor {ref!r}")
    sponsor = conn.execute(sa.select(p.c.name).where(p.c.id == org.sponsor_id)).scalar()
    usage: dict[str, tuple[float, list[str]]] = {}
    address = sa.func.json_extract(a.c.record, "$.data.client_address")
    stmt = (
        sa.select(a.c.credential_id, sa.func.max(a.c.at), sa.func.group_concat(address.distinct()))
        .where(a.c.name == "request.allowed", a.c.credential_id.is_not(None))
        .group_by(a.c.credential_id)
    )
    for cred_id, last, sources in conn.execute(stmt):
        usage[cred_id] = (last, sorted((sources or "").split(",")) if sources else [])
    people = []
    dormant = []
    seats = 0
    for prn in conn.execute(sa.select(p).where(p.c.org_id == org.id).order_by(p.c.name)):
        seats += prn.status == "active"
        keys = []
        last_any = None
        for key in conn.execute(sa.select(c).where(c.c.principal_id == prn.id)):
            last, sources = usage.get(key.id, (None, []))
            state = (
                "revoked"
                if key.revoked_at
                else "expired"
                if key.expires_at and key.expires_at <= now
                else "active"
            )
            keys.append(
                {
                    "id": key.id,
                    "state": state,
                    "expires_at": key.expires_at,
                    "last_used": last,
                    "sources": sources,
                    "canary": bool(key.canary),
                }
            )
            if last is not None:
                last_any = max(last_any or 0.0, last)
        quiet_since = last_any if last_any is not None else prn.created_at
        if prn.status == "active" and now - quiet_since > dormant_days * 86400:
            dormant.append(prn.name)
        people.append(
            {
                "name": prn.name,
                "status": prn.status,
                "clearance": Level(prn.clearance).label,
                "keys": keys,
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
        "contract_days_left": max(0, int(((org.contract_end or now) - now) // 86400)),
        "seats_used": seats,
        "principals": people,
        "dormant": dormant,
    }
