"""``garrison org|user|service|key|model|whoami``: the directory, through the admin API.

Every command is one admin API call made with the admin key of the config (or
``GARRISON_ADMIN_KEY``); the server authorises it by role and records it naming the admin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, table, when
from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.domain.durations import parse_duration

LEVELS = [lv.label for lv in Level]
ROLES = ["security-admin", "approver", "vendor-manager", "auditor"]


def seg(ref: str) -> str:
    """A name or id as one URL path segment."""
    return quote(ref, safe="")


def _seconds(text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


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
        _show_pending(created["pending"])
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
        _show_pending(result["pending"])
        return
    changes = result["changes"]
    if not changes:
        click.echo(f"{name}: nothing changed")
    for field, (before, after) in changes.items():
        click.echo(f"{name}: {field} {before} → {after}")


def _show_pending(pending: dict[str, object]) -> None:
    click.echo(
        f"{pending['id']}: proposed — a second security-admin applies it with "
        f"`garrison change approve {pending['id']}`"
    )


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


# ── keys ───────────────────────────────────────────────────────────────────────────────────
@click.group()
def key() -> None:
    """API keys."""


def _show_issued(issued: dict[str, object], as_json: bool) -> None:
    if as_json:
        emit_json(issued)
        return
    if "enrollment_code" in issued:
        from garrison.cli.identity_cmds import show_code

        click.echo(f"key {issued.get('rotated_from', '')} revoked now (a person's key)")
        show_code(issued)
        return
    if "pending" in issued:  # above the issuer's reach: a second admin approves first
        _show_pending(issued["pending"])  # type: ignore[arg-type]
        return
    if "invite" in issued:
        click.echo(f"key {issued.get('rotated_from', '')} revoked now (a person's key)")
        click.echo(str(issued["invite"]))
        return
    click.echo(f"key id:  {issued['id']}")
    if "provenance" in issued:
        click.echo(f"provenance: {issued['provenance']}")
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
@config_option
@json_option
def key_create(
    principal: str | None,
    own: bool,
    expires_in: str,
    networks: tuple[str, ...],
    note: str,
    canary: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """Create a service account's key, or (--self) one of your own; printed once. A
    person's key is never made by someone else: invite them (`garrison user invite`)."""
    if own == (principal is not None):
        raise click.UsageError("give a service account PRINCIPAL or --self")
    body: dict[str, object] = {
        "expires_in_s": _seconds(expires_in, "--expires-in"),
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
    with api(config_path) as client:
        result = client.post("/keys", body)
    if "pending" in result and not as_json:
        _show_pending(result["pending"])
        click.echo(f"once approved, run `garrison key create {principal}` again for the key")
        return
    _show_issued(result, as_json)


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
    columns += ["note", "canary"]
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
    grace_s = 0.0 if grace.strip() in ("0", "0s") else _seconds(grace, "--grace")
    body: dict[str, object] = {"grace_s": grace_s, "reason": reason}
    with api(config_path) as client:
        issued = client.post(f"/keys/{seg(str(key_id))}/rotate", body)
    _show_issued(issued, as_json)


# ── models ─────────────────────────────────────────────────────────────────────────────────
@click.group()
def model() -> None:
    """The model registry."""


def _upstream_key(env_var: str | None) -> str | None:
    if not env_var:
        return None
    value = os.environ.get(env_var)
    if not value:
        raise click.BadParameter(
            f"environment variable {env_var} is empty or unset", param_hint="--upstream-key-env"
        )
    return value


def _tls_options(func: Any) -> Any:
    """--tls-ca-file, --tls-client-cert-file, --tls-client-key-file: absolute paths on the
    gateway's host (the gateway reads them, not the CLI)."""
    for option, what in reversed(
        (
            ("--tls-ca-file", "CA bundle (PEM) the upstream's certificate must chain to."),
            ("--tls-client-cert-file", "Client certificate (PEM) shown to the upstream."),
            ("--tls-client-key-file", "Its unencrypted private key (PEM)."),
        )
    ):
        func = click.option(option, default=None, metavar="PATH", help=what)(func)
    return func


def _tls_body(ca: str | None, cert: str | None, key: str | None) -> dict[str, str]:
    given = {"tls_ca_file": ca, "tls_client_cert_file": cert, "tls_client_key_file": key}
    return {k: v for k, v in given.items() if v is not None}


@model.command("add")
@click.argument("name")
@click.option("--upstream-url", required=True, help="Base URL, e.g. http://10.0.0.5:8000/v1")
@click.option(
    "--upstream-model", default=None, help="The upstream's own model name (default: NAME)."
)
@click.option(
    "--api",
    "upstream_api",
    default="openai",
    show_default=True,
    type=click.Choice([a.value for a in UpstreamApi]),
)
@click.option(
    "--auth",
    "auth_style",
    default=None,
    type=click.Choice([a.value for a in AuthStyle]),
    help="How to present the upstream key (default: bearer for openai, x-api-key for anthropic).",
)
@click.option(
    "--upstream-key-env",
    default=None,
    metavar="VAR",
    help="Environment variable holding the upstream credential (never an argument).",
)
@click.option("--level", default="internal", show_default=True, type=click.Choice(LEVELS))
@click.option("--compartment", "compartments", multiple=True)
@click.option(
    "--allow-field",
    "allow_fields",
    multiple=True,
    metavar="FIELD",
    help="A request field beyond the API's documented ones to forward (e.g. top_k); repeat.",
)
@_tls_options
@config_option
def model_add(
    name: str,
    upstream_url: str,
    upstream_model: str | None,
    upstream_api: str,
    auth_style: str | None,
    upstream_key_env: str | None,
    level: str,
    compartments: tuple[str, ...],
    allow_fields: tuple[str, ...],
    tls_ca_file: str | None,
    tls_client_cert_file: str | None,
    tls_client_key_file: str | None,
    config_path: Path,
) -> None:
    """Register a model."""
    upstream_key = _upstream_key(upstream_key_env)
    body = {
        "name": name,
        "upstream_url": upstream_url,
        "upstream_model": upstream_model,
        "api": upstream_api,
        "auth_style": auth_style if upstream_key else "none",
        "upstream_key": upstream_key,
        "level": level,
        "compartments": list(compartments),
        "extra_fields": list(allow_fields),
        **_tls_body(tls_ca_file, tls_client_cert_file, tls_client_key_file),
    }
    with api(config_path) as client:
        created = client.post("/models", body)
    if "pending" in created:  # restricted or above, or on a better-protected model's server
        _show_pending(created["pending"])
    else:
        click.echo(created["id"])


@model.command("list")
@config_option
@json_option
def model_list(config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/models")
    columns = ["id", "name", "upstream_url", "upstream_model", "api", "level"]
    extras = ["compartments", "upstream_key", "extra_fields", "tls_ca_file", "tls_client_cert_file"]
    table(rows, [*columns, *extras], as_json, "Models")


@model.command("update")
@click.argument("name")
@click.option("--upstream-url", default=None)
@click.option("--upstream-model", default=None)
@click.option(
    "--api", "upstream_api", default=None, type=click.Choice([a.value for a in UpstreamApi])
)
@click.option("--auth", "auth_style", default=None, type=click.Choice([a.value for a in AuthStyle]))
@click.option("--upstream-key-env", default=None, metavar="VAR", help="Replace the credential.")
@click.option("--remove-upstream-key", is_flag=True, help="Remove the upstream credential.")
@click.option("--level", default=None, type=click.Choice(LEVELS))
@click.option("--compartment", "compartments", multiple=True, help="Replace; repeat.")
@click.option("--no-compartments", is_flag=True, help="Remove every compartment.")
@click.option(
    "--allow-field",
    "allow_fields",
    multiple=True,
    metavar="FIELD",
    help="Replace the extra request fields forwarded; repeat.",
)
@click.option("--no-extra-fields", is_flag=True, help="Forward only documented fields.")
@_tls_options
@click.option(
    "--no-upstream-tls", is_flag=True, help="Back to the system's CAs and no client certificate."
)
@config_option
@json_option
def model_update(
    name: str,
    upstream_url: str | None,
    upstream_model: str | None,
    upstream_api: str | None,
    auth_style: str | None,
    upstream_key_env: str | None,
    remove_upstream_key: bool,
    level: str | None,
    compartments: tuple[str, ...],
    no_compartments: bool,
    allow_fields: tuple[str, ...],
    no_extra_fields: bool,
    tls_ca_file: str | None,
    tls_client_cert_file: str | None,
    tls_client_key_file: str | None,
    no_upstream_tls: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """Change a model's upstream, credential, level or compartments (security-admin)."""
    body: dict[str, object] = {
        k: v
        for k, v in {
            "upstream_url": upstream_url,
            "upstream_model": upstream_model,
            "api": upstream_api,
            "auth_style": auth_style,
            "upstream_key": _upstream_key(upstream_key_env),
            "level": level,
        }.items()
        if v is not None
    }
    if remove_upstream_key:
        body["clear_upstream_key"] = True
    if compartments or no_compartments:
        body["compartments"] = list(compartments)
    if allow_fields or no_extra_fields:
        body["extra_fields"] = list(allow_fields)
    body.update(_tls_body(tls_ca_file, tls_client_cert_file, tls_client_key_file))
    if no_upstream_tls:
        body["clear_upstream_tls"] = True
    if not body:
        raise click.UsageError("nothing to change")
    with api(config_path) as client:
        result = client.patch(f"/models/{seg(name)}", body)
    if as_json:
        emit_json(result)
        return
    if "pending" in result:
        _show_pending(result["pending"])
        return
    for field, change in result["changes"].items():
        click.echo(f"{name}: {field} {change}")
    if not result["changes"]:
        click.echo(f"{name}: nothing changed")
