"""``garrison enroll``, ``user invite``, ``key create --self`` and ``keys audit``: every
person makes their own credential (issue 12)."""

from __future__ import annotations

from pathlib import Path

import click

from garrison.cli.client import AdminClient, resolve_url
from garrison.cli.directory_cmds import seg, user
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, table, when
from garrison.config import load_settings


def show_code(issued: dict[str, object]) -> None:
    """An enrollment code, for the inviter to deliver out of band."""
    expires = issued["expires_at"]
    until = when(expires if isinstance(expires, float | int) else None)
    click.echo(
        f"enrollment code for {issued['name']} (shown once; single use; valid until {until}):"
    )
    click.echo(f"  {issued['enrollment_code']}")
    click.echo(f"deliver it to {issued['name']} out of band; they run `garrison enroll CODE`")


@user.command("invite")
@click.argument("name")
@config_option
@json_option
def user_invite(name: str, config_path: Path, as_json: bool) -> None:
    """Issue a one-time enrollment code for a person (a second admin approves first when
    they hold a role, a compartment or a clearance above internal)."""
    with api(config_path) as client:
        result = client.post(f"/principals/{seg(name)}/invite", {})
    if as_json:
        emit_json(result)
        return
    if "pending" in result:
        pending = result["pending"]
        click.echo(
            f"{pending['id']}: proposed — once a second security-admin approves it "
            f"(`garrison change approve {pending['id']}`), run `garrison user invite {name}` "
            "again for the code"
        )
        return
    show_code(result)


@click.command()
@click.argument("code")
@click.option("--save", is_flag=True, help="Write the key to the config's credential file (0600).")
@click.option(
    "--key-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the key to this file (created 0600) instead of printing it.",
)
@click.option("--expires-in", default="90d", show_default=True, help="e.g. 30d (max 90d).")
@click.option("--network", "networks", multiple=True, help="Allowed source CIDR; repeat.")
@config_option
@json_option
def enroll(
    code: str,
    save: bool,
    key_file: Path | None,
    expires_in: str,
    networks: tuple[str, ...],
    config_path: Path,
    as_json: bool,
) -> None:
    """Redeem an enrollment code: make your own key (nobody else ever sees it)."""
    from garrison.bootstrap import write_credential
    from garrison.cli.directory_cmds import _seconds

    if save and key_file is not None:
        raise click.UsageError("give --save or --key-file, not both")
    target = key_file
    if save:
        settings = load_settings(config_path) if config_path.exists() else None
        if settings is None or settings.admin_credential_file is None:
            raise click.UsageError("--save needs a config with [admin] credential_file")
        target = settings.admin_credential_file
    body = {
        "code": code,
        "expires_in_s": _seconds(expires_in, "--expires-in"),
        "networks": list(networks),
    }
    client = AdminClient(resolve_url(config_path), None)
    try:
        issued = client.post("/enroll", body)
    finally:
        client.close()
    if target is not None:
        write_credential(target, str(issued["key"]))
        issued = {k: v for k, v in issued.items() if k != "key"} | {"key_file": str(target)}
    if as_json:
        emit_json(issued)
        return
    click.echo(f"enrolled as {issued['principal']}: key {issued['id']} (provenance enrolled)")
    click.echo(f"expires: {when(issued['expires_at'])}")
    if target is not None:
        click.echo(f"key written to {target} (mode 0600)")
    else:
        click.echo("key (shown once):")
        click.echo(f"  {issued['key']}")


@click.command("audit")
@config_option
@json_option
def keys_audit(config_path: Path, as_json: bool) -> None:
    """People's live keys that someone else made (legacy, break-glass): rotate each (the
    person gets a new enrollment code)."""
    with api(config_path) as client:
        rows = client.get("/keys/audit")
    for row in rows:
        row["created"] = when(row["created_at"])
    table(
        rows,
        ["id", "principal", "provenance", "created_by", "created", "action"],
        as_json,
        "Keys someone else made for a person",
    )
