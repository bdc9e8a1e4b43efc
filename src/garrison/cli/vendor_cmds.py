"""``garrison vendor …``: vendors as first-class objects, and the report a security team reads.

Every command drives the admin API (see ``garrison.cli.client``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from garrison.cli.directory_args import seg
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, console, emit_json, iso_time, table
from garrison.domain import Level
from garrison.store.queries import DORMANT_DAYS


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
    body: dict[str, Any] = {
        "name": name,
        "sponsor": sponsor,
        "contract_end": iso_time(contract_end, "--contract-end"),
        "networks": list(networks),
        "seat_limit": seats,
        "ceiling": ceiling,
        "ceiling_compartments": list(compartments),
        "agreement_ref": agreement,
    }
    if contract_start:
        body["contract_start"] = iso_time(contract_start, "--contract-start")
    if security_review:
        body["security_review_at"] = iso_time(security_review, "--security-review")
    with api(config_path) as client:
        click.echo(client.post("/vendors", body)["id"])


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
    body: dict[str, Any] = {}
    if contract_end:
        body["contract_end"] = iso_time(contract_end, "--contract-end")
    if networks:
        body["networks"] = list(networks)
    if seats is not None:
        body["seat_limit"] = seats
    if ceiling:
        body["ceiling"] = ceiling
    if compartments:
        body["ceiling_compartments"] = list(compartments)
    if agreement is not None:
        body["agreement_ref"] = agreement
    if security_review:
        body["security_review_at"] = iso_time(security_review, "--security-review")
    if not body:
        raise click.UsageError("nothing to change")
    with api(config_path) as client:
        emit_json(client.patch(f"/vendors/{seg(vendor_ref)}", body)["changes"])


def _status_command(name: str, target: str, help_text: str) -> None:
    @vendor.command(name, help=help_text)
    @click.argument("vendor_ref")
    @click.option("--reason", default="", help="Why (kept in the audit log).")
    @config_option
    def command(vendor_ref: str, reason: str, config_path: Path) -> None:
        with api(config_path) as client:
            body = {"status": target, "reason": reason}
            client.post(f"/vendors/{seg(vendor_ref)}/status", body)
        click.echo(f"{vendor_ref}: {target}")


_status_command("activate", "active", "Open a vendor (or lift a suspension).")
_status_command("suspend", "suspended", "Stop a vendor's people and keys at once.")
_status_command(
    "offboard",
    "offboarded",
    "End the relationship: revoke every key, disable every principal.",
)


@vendor.command("list")
@config_option
@json_option
def vendor_list(config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/vendors")
    for row in rows:
        row["contract_end"] = _fmt(row["contract_end"])
    columns = ["id", "name", "status", "contract_end", "days_left", "seat_limit", "ceiling"]
    table(rows, columns, as_json, "Vendors")


@vendor.command("show")
@click.argument("vendor_ref")
@click.option("--dormant-days", default=DORMANT_DAYS, show_default=True, type=int)
@config_option
@json_option
def vendor_show(vendor_ref: str, dormant_days: int, config_path: Path, as_json: bool) -> None:
    """Terms, seats, keys with their last use and source networks, dormant accounts."""
    with api(config_path) as client:
        report = client.get(f"/vendors/{seg(vendor_ref)}", dormant_days=str(dormant_days))
    if as_json:
        emit_json(report)
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
    rows = []
    for p in report["principals"]:
        keys = p["keys"] or [{"id": "-", "state": "-", "last_used": None, "sources": []}]
        for k in keys:
            rows.append(
                {
                    "principal": p["name"],
                    "status": p["status"],
                    "clearance": p["clearance"],
                    "key": k["id"],
                    "key state": k["state"],
                    "last use": _fmt(k["last_used"]),
                    "source addresses": ", ".join(k["sources"]),
                }
            )
    table(rows, list(rows[0]) if rows else ["principal"], False, "Principals and keys")
    dormant = report["dormant"]
    console.print(
        f"dormant (no call in {dormant_days} days): {', '.join(dormant) or 'none'}", highlight=False
    )
