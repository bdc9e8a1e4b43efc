"""``garrison org|user|service|whoami``: orgs and principals, through the admin API.

Every command is one admin API call made with the admin key of the config (or
``GARRISON_ADMIN_KEY``); the server authorises it by role and records it naming the admin.
The keys and the model registry have their own modules (``key_cmds``, ``model_cmds``).
"""

from __future__ import annotations

from pathlib import Path

import click

from garrison.cli.directory_args import LEVELS, ROLES, seconds, seg, show_pending
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, table, when

# identity_cmds reads these two from here (they now live in directory_args).
_seconds = seconds
__all__ = ["org", "seg", "service", "user", "whoami"]


@click.command()
@config_option
@json_option
def whoami(config_path: Path, as_json: bool) -> None:
    """The admin the CLI acts as: principal, roles, vendor scope."""
    with api(config_path) as client:
        me = client.get("/whoami")
    if as_json:
        emit_json(me)
        return
    click.echo(f"{me['name']} ({me['id']}) roles: {', '.join(me['roles']) or 'none'}")
    click.echo(
        f"key {me['credential_id']} provenance {me.get('credential_provenance') or '-'}; "
        f"invited by {me.get('invited_by_name') or '-'}"
    )
    if me["vendor_scope"]:
        click.echo(f"vendor scope: {', '.join(me['vendor_scope'])}")


# ── orgs ───────────────────────────────────────────────────────────────────────────────────
@click.group()
def org() -> None:
    """Organisations: the internal one and vendors."""


@org.command("add")
@click.argument("name")
@config_option
def org_add(name: str, config_path: Path) -> None:
    """Add an internal org (vendors: `garrison vendor add`)."""
    with api(config_path) as client:
        click.echo(client.post("/orgs", {"name": name})["id"])


@org.command("list")
@config_option
@json_option
def org_list(config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/orgs")
    for row in rows:
        row["created"] = when(row["created_at"])
    table(rows, ["id", "name", "kind", "created"], as_json, "Organisations")


# ── principals ─────────────────────────────────────────────────────────────────────────────
def _add_principal(
    config_path: Path,
    name: str,
    org_ref: str,
    kind: str,
    clearance: str,
    compartments: tuple[str, ...],
    roles: tuple[str, ...],
    *,
    owner: str | None = None,
    invite: bool = False,
) -> None:
    body: dict[str, object] = {
        "name": name,
        "org": org_ref,
        "kind": kind,
        "clearance": clearance,
        "compartments": list(compartments),
        "roles": list(roles),
        "invite": invite,
    }
    if owner is not None:
        body["owner"] = owner
    with api(config_path) as client:
        created = client.post("/principals", body)
    if "pending" in created:  # a role, a compartment or a clearance above internal
        show_pending(created["pending"])
        if kind == "human":
            click.echo(f"once approved, `garrison user invite {name}` gives the enrollment code")
        return
    click.echo(created["id"])
    if "enrollment_code" in created:
        from garrison.cli.identity_cmds import show_code

        show_code(created)


@click.group()
def user() -> None:
    """People (principals of kind human)."""


@user.command("add")
@click.argument("name")
@click.option("--org", "org_ref", required=True, help="Org name or id.")
@click.option("--clearance", default="internal", show_default=True, type=click.Choice(LEVELS))
@click.option("--compartment", "compartments", multiple=True, help="Repeat for several.")
@click.option(
    "--role", "roles", multiple=True, type=click.Choice(ROLES), help="Admin role; repeat."
)
@click.option("--no-invite", is_flag=True, help="No enrollment code now (`user invite` later).")
@config_option
def user_add(
    name: str,
    org_ref: str,
    clearance: str,
    compartments: tuple[str, ...],
    roles: tuple[str, ...],
    no_invite: bool,
    config_path: Path,
) -> None:
    """Add a person; prints their one-time enrollment code (unless a second admin must
    approve first: then `garrison user invite NAME` after the approval)."""
    _add_principal(
        config_path, name, org_ref, "human", clearance, compartments, roles, invite=not no_invite
    )


@user.command("list")
@click.option("--org", "org_ref", default=None, help="Only this org.")
@click.option("--kind", default=None, type=click.Choice(["human", "service"]))
@config_option
@json_option
def user_list(org_ref: str | None, kind: str | None, config_path: Path, as_json: bool) -> None:
    """People and service accounts."""
    with api(config_path) as client:
        rows = client.get("/principals", org=org_ref, kind=kind)
    columns = ["id", "name", "org", "kind", "clearance", "compartments", "roles", "status"]
    table(rows, columns, as_json, "Principals")


@user.command("show")
@click.argument("name")
@config_option
@json_option
def user_show(name: str, config_path: Path, as_json: bool) -> None:
    """A principal with its keys, their last use and source addresses."""
    with api(config_path) as client:
        report = client.get(f"/principals/{seg(name)}")
    if as_json:
        emit_json(report)
        return
    click.echo(
        f"{report['name']} ({report['id']}) {report['kind']} in {report['org']} — "
        f"{report['status']}; clearance {report['clearance']} "
        f"{report['compartments']}; roles {', '.join(report['roles']) or 'none'}; "
        f"last use {when(report['last_used'])}"
    )
    for key in report["keys"]:
        key["expires"] = when(key["expires_at"])
        key["last use"] = when(key["last_used"])
    table(
        report["keys"],
        ["id", "state", "expires", "networks", "last use", "sources", "note"],
        False,
        "Keys",
    )


@user.command("update")
@click.argument("name")
@click.option("--clearance", default=None, type=click.Choice(LEVELS))
@click.option(
    "--compartment", "compartments", multiple=True, help="Replace the compartments; repeat."
)
@click.option("--no-compartments", is_flag=True, help="Remove every compartment.")
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES), help="Replace roles.")
@click.option("--no-roles", is_flag=True, help="Remove every admin role.")
@config_option
@json_option
def user_update(
    name: str,
    clearance: str | None,
    compartments: tuple[str, ...],
    no_compartments: bool,
    roles: tuple[str, ...],
    no_roles: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """Change a principal's clearance, compartments or roles (security-admin)."""
    body: dict[str, object] = {}
    if clearance:
        body["clearance"] = clearance
    if compartments or no_compartments:
        body["compartments"] = list(compartments)
    if roles or no_roles:
        body["roles"] = list(roles)
    if not body:
        raise click.UsageError("nothing to change")
    _patch_principal(config_path, name, body, as_json)


def _patch_principal(config_path: Path, name: str, body: dict[str, object], as_json: bool) -> None:
    with api(config_path) as client:
        result = client.patch(f"/principals/{seg(name)}", body)
    if as_json:
        emit_json(result)
        return
    if "pending" in result:
        show_pending(result["pending"])
        return
    changes = result["changes"]
    if not changes:
        click.echo(f"{name}: nothing changed")
    for field, (before, after) in changes.items():
        click.echo(f"{name}: {field} {before} → {after}")


@user.command("disable")
@click.argument("name")
@config_option
def user_disable(name: str, config_path: Path) -> None:
    """Stop a principal at once (every key stops working)."""
    _patch_principal(config_path, name, {"status": "disabled"}, False)


@user.command("enable")
@click.argument("name")
@config_option
def user_enable(name: str, config_path: Path) -> None:
    """Enable a principal again (a vendor seat must be free)."""
    _patch_principal(config_path, name, {"status": "active"}, False)


@click.group()
def service() -> None:
    """Service accounts: principals for programs, never holding admin roles."""


@service.command("add")
@click.argument("name")
@click.option("--org", "org_ref", required=True, help="Org name or id.")
@click.option("--clearance", default="internal", show_default=True, type=click.Choice(LEVELS))
@click.option("--compartment", "compartments", multiple=True, help="Repeat for several.")
@click.option("--owner", default=None, help="The person who answers for it (default: you).")
@config_option
def service_add(
    name: str,
    org_ref: str,
    clearance: str,
    compartments: tuple[str, ...],
    owner: str | None,
    config_path: Path,
) -> None:
    """Add a service account (owned by a person; a lock on them covers it)."""
    _add_principal(config_path, name, org_ref, "service", clearance, compartments, (), owner=owner)
