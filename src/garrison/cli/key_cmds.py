"""``garrison key``: API keys, through the admin API (create, list, revoke, rotate).

Every command is one admin API call made with the admin key of the config (or
``GARRISON_ADMIN_KEY``); the server authorises it by role and records it naming the admin.
"""

from __future__ import annotations

from pathlib import Path

import click

from garrison.cli.directory_args import seconds, seg, show_pending
from garrison.cli.identity_cmds import show_code
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, table, when
from garrison.identity.cert_binding import CERT_FILE_MAX_BYTES, thumbprint_of_certificate


# ── keys ───────────────────────────────────────────────────────────────────────────────────
@click.group()
def key() -> None:
    """API keys."""


def _show_issued(issued: dict[str, object], as_json: bool) -> None:
    if as_json:
        emit_json(issued)
        return
    if "enrollment_code" in issued:
        click.echo(f"key {issued.get('rotated_from', '')} revoked now (a person's key)")
        show_code(issued)
        return
    if "pending" in issued:  # above the issuer's reach: a second admin approves first
        show_pending(issued["pending"])  # type: ignore[arg-type]
        return
    if "invite" in issued:
        click.echo(f"key {issued.get('rotated_from', '')} revoked now (a person's key)")
        click.echo(str(issued["invite"]))
        return
    click.echo(f"key id:  {issued['id']}")
    if "provenance" in issued:
        click.echo(f"provenance: {issued['provenance']}")
    if issued.get("cert_thumbprint"):
        click.echo(f"bound to the client certificate x5t#S256 {issued['cert_thumbprint']}")
    expires = issued["expires_at"]
    click.echo(f"expires: {when(expires if isinstance(expires, float | int) else None)}")
    click.echo("key (shown once):")
    click.echo(f"  {issued['key']}")


@key.command("create")
@click.argument("principal", required=False)
@click.option("--self", "own", is_flag=True, help="A key for yourself (needs your own key).")
@click.option("--expires-in", default="90d", show_default=True, help="e.g. 12h, 30d (max 90d).")
@click.option("--network", "networks", multiple=True, help="Allowed source CIDR; repeat.")
@click.option("--note", default="", help="What the key is for.")
@click.option(
    "--canary",
    is_flag=True,
    help="A planted key: looks like any other; any use of it is an attack signal.",
)
@click.option(
    "--bind-cert",
    "bind_cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Bind the key to this client certificate (PEM or DER): the key then works only "
    "over TLS with it. Only its thumbprint is sent; the private key stays here.",
)
@config_option
@json_option
def key_create(
    principal: str | None,
    own: bool,
    expires_in: str,
    networks: tuple[str, ...],
    note: str,
    canary: bool,
    bind_cert: Path | None,
    config_path: Path,
    as_json: bool,
) -> None:
    """Create a service account's key, or (--self) one of your own; printed once. A
    person's key is never made by someone else: invite them (`garrison user invite`)."""
    if own == (principal is not None):
        raise click.UsageError("give a service account PRINCIPAL or --self")
    if own and bind_cert is not None:
        raise click.UsageError("--bind-cert is for a service account (people sign in)")
    body: dict[str, object] = {
        "expires_in_s": seconds(expires_in, "--expires-in"),
        "networks": list(networks),
        "note": note,
    }
    if own:
        if canary:
            raise click.UsageError("--canary is for a service account")
        with api(config_path) as client:
            _show_issued(client.post("/keys/self", body), as_json)
        return
    body |= {"principal": principal, "canary": canary}
    if bind_cert is not None:
        body["cert_thumbprint"] = _thumbprint_of(bind_cert)
    with api(config_path) as client:
        result = client.post("/keys", body)
    if "pending" in result and not as_json:
        show_pending(result["pending"])
        click.echo(f"once approved, run `garrison key create {principal}` again for the key")
        return
    _show_issued(result, as_json)


def _thumbprint_of(path: Path) -> str:
    """The x5t#S256 of the certificate in ``path``; a one-line usage error otherwise."""
    try:
        with path.open("rb") as file:
            data = file.read(CERT_FILE_MAX_BYTES + 1)
        return thumbprint_of_certificate(data)
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--bind-cert") from None
    except ValueError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--bind-cert") from None


@key.command("list")
@click.option("--principal", default=None, help="Only this principal's keys.")
@config_option
@json_option
def key_list(principal: str | None, config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/keys", principal=principal)
    for row in rows:
        row["expires"] = when(row["expires_at"])
    columns = ["id", "principal", "state", "provenance", "created_by", "expires", "networks"]
    columns += ["note", "canary", "cert_thumbprint"]
    table(rows, columns, as_json, "Keys")


@key.command("revoke")
@click.argument("key_id")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@config_option
def key_revoke(key_id: str, reason: str, config_path: Path) -> None:
    """Revoke a key at once."""
    with api(config_path) as client:
        client.post(f"/keys/{seg(key_id)}/revoke", {"reason": reason})
    click.echo(f"revoked {key_id}")


@key.command("rotate")
@click.argument("key_id", required=False)
@click.option(
    "--vendor",
    default=None,
    help="Containment: revoke every key of this vendor's people and issue each a new one.",
)
@click.option(
    "--grace",
    default="0s",
    show_default=True,
    help="Keep the old key working this long (max 24h), e.g. 1h; 0s revokes it now.",
)
@click.option("--reason", default="", help="Why (kept in the audit log).")
@config_option
@json_option
def key_rotate(
    key_id: str | None,
    vendor: str | None,
    grace: str,
    reason: str,
    config_path: Path,
    as_json: bool,
) -> None:
    """Issue a successor key (printed once) and retire the old one; or, with --vendor,
    replace every key of a vendor's people at once."""
    if (key_id is None) == (vendor is None):
        raise click.UsageError("give a KEY_ID or --vendor V")
    if vendor is not None:
        with api(config_path) as client:
            result = client.post(
                f"/vendors/{seg(vendor)}/rotate-keys", {"reason": reason or "vendor rotation"}
            )
        if as_json:
            emit_json(result)
            return
        click.echo(
            f"every key of {vendor} revoked; {len(result['issued'])} new enrollment code(s) "
            "(people) and service key(s), shown once:"
        )
        for issued in result["issued"]:
            if "enrollment_code" in issued:
                click.echo(f"  {issued['name']}  enrollment code {issued['enrollment_code']}")
            else:
                click.echo(f"  {issued['principal_id']}  {issued['id']}  {issued['key']}")
        return
    grace_s = 0.0 if grace.strip() in ("0", "0s") else seconds(grace, "--grace")
    body: dict[str, object] = {"grace_s": grace_s, "reason": reason}
    with api(config_path) as client:
        issued = client.post(f"/keys/{seg(str(key_id))}/rotate", body)
    _show_issued(issued, as_json)
