"""``garrison model``: the model registry, through the admin API (add, list, update).

Every command is one admin API call made with the admin key of the config (or
``GARRISON_ADMIN_KEY``); the server authorises it by role and records it naming the admin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from garrison.cli.directory_args import LEVELS, seg, show_pending
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, table
from garrison.domain import AuthStyle, UpstreamApi


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
        show_pending(created["pending"])
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
        show_pending(result["pending"])
        return
    for field, change in result["changes"].items():
        click.echo(f"{name}: {field} {change}")
    if not result["changes"]:
        click.echo(f"{name}: nothing changed")
