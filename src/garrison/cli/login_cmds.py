"""``garrison login`` and ``garrison logout``: sign in through the organisation's identity
provider and keep a DPoP-bound session (``garrison.identity.oidc_login``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from garrison.cli.client import resolve_url
from garrison.cli.options import config_option, json_option
from garrison.cli.output import emit_json
from garrison.errors import GarrisonError
from garrison.identity.step_up import MFA_FRESH_S


@click.command()
@click.option(
    "--gateway",
    "gateway_url",
    default=None,
    help="The gateway's URL for model calls (default: $GARRISON_GATEWAY_URL, else the one "
    "the admin API announces).",
)
@click.option(
    "--admin",
    "admin_url",
    default=None,
    help="The admin API's URL, where you sign in (default: $GARRISON_ADMIN_URL, else "
    "--gateway, else the config's).",
)
@click.option("--provider", "provider_name", default=None, help="A vendor's provider by name.")
@click.option(
    "--device", is_flag=True, help="Device flow (RFC 8628) for machines without a browser."
)
@click.option(
    "--code",
    "enrollment_code",
    default=None,
    help="Your invitation's enrollment code (first sign-in only).",
)
@click.option(
    "--max-age",
    type=click.IntRange(min=0),
    default=None,
    help=f"Make the provider authenticate you again if your sign-in there is older than this "
    f"many seconds (approvals need one within {MFA_FRESH_S}).",
)
@click.option(
    "--refresh", is_flag=True, help="Renew the session from the provider's refresh token."
)
@click.option("--no-browser", is_flag=True, help="Print the URL instead of opening a browser.")
@click.option(
    "--session-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the session is kept (default: ~/.config/garrison/session.json, 0600).",
)
@config_option
@json_option
def login(
    gateway_url: str | None,
    admin_url: str | None,
    provider_name: str | None,
    device: bool,
    enrollment_code: str | None,
    max_age: int | None,
    refresh: bool,
    no_browser: bool,
    session_file: Path | None,
    config_path: Path,
    as_json: bool,
) -> None:
    """Sign in through the identity provider; the session (a short-lived token bound to a
    key made on this machine) is stored 0600 for the CLI and `garrison.client`, with the
    gateway's URL (model calls) and the admin API's (admin commands)."""
    from garrison.identity.oidc_login import login as do_login

    gateway_url = gateway_url or os.environ.get("GARRISON_GATEWAY_URL") or None
    admin_url = (
        admin_url or os.environ.get("GARRISON_ADMIN_URL") or gateway_url or resolve_url(config_path)
    )
    result = do_login(
        admin_url,
        gateway_url=gateway_url,
        provider_name=provider_name,
        device=device,
        refresh=refresh,
        enrollment_code=enrollment_code,
        max_age=max_age,
        session_path=session_file,
        open_browser=(lambda _url: None) if no_browser else None,
        say=lambda text: click.echo(text, err=True),
        # The local address to call from (a host with several), as for every command.
        local_address=os.environ.get("GARRISON_SOURCE_ADDRESS", "").strip() or None,
    )
    if as_json:
        emit_json(result)
        return
    dropped = result.get("roles_dropped") or []
    click.echo(
        f"signed in as {result['principal']} through {result['provider']} "
        f"({'with' if result.get('mfa') else 'without'} MFA); session valid "
        f"{int(result['expires_in']) // 60} min, stored in {result['session_file']}"
    )
    if dropped:
        click.echo(
            f"roles not held this session (not in the provider's group): {', '.join(dropped)}"
        )


@click.command()
@click.option("--session-file", type=click.Path(path_type=Path), default=None)
def logout(session_file: Path | None) -> None:
    """Delete this machine's session and provider refresh token."""
    from garrison.identity.oidc_login import logout as do_logout

    try:
        removed = do_logout(session_file)
    except GarrisonError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("signed out" if removed else "no session was stored")


@click.group()
def sessions() -> None:
    """Sign-in sessions (one per `garrison login`): list them to lock one alone with
    `garrison lock credential <session id>`."""


@sessions.command("list")
@click.option("--principal", required=True, help="The person (name or id).")
@click.option("--all", "include_ended", is_flag=True, help="Include expired sessions.")
@config_option
@json_option
def sessions_list(principal: str, include_ended: bool, config_path: Path, as_json: bool) -> None:
    """A person's sign-in sessions: id, provider, key thumbprint, MFA, roles, times (never
    a token)."""
    from garrison.cli.output import api, table, when

    with api(config_path) as client:
        rows = client.get("/sessions", principal=principal, all="true" if include_ended else None)
    for row in rows:
        row["issued"] = when(row["issued_at"])
        row["expires"] = when(row["expires_at"])
        row["amr"] = " ".join(row["amr"])
        row["roles"] = " ".join(row["roles"]) or "-"
    columns = ["id", "provider", "jkt", "amr", "roles", "address", "issued", "expires"]
    table(rows, columns, as_json, "Sign-in sessions")
