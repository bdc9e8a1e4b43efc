"""The ``garrison`` command.

Until the admin API lands, the directory commands act on the local database directly, with
the key files of the config; every change is still one transaction with its audit event,
attributed to the local user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from garrison import __version__
from garrison.bootstrap import init as do_init
from garrison.bootstrap import open_directory
from garrison.cli.durations import parse_duration
from garrison.cli.options import DEFAULT_DATA_DIR, config_option, json_option
from garrison.config import Settings, load_settings
from garrison.domain import AuthStyle, Level, OrgKind, PrincipalKind, Status, UpstreamApi
from garrison.errors import GarrisonError
from garrison.keyring import Sealer, add_seal_key
from garrison.store import make_engine, schema

console = Console()
err_console = Console(stderr=True)


def _settings(config_path: Path) -> Settings:
    return load_settings(config_path)


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    sys.exit(2)


class _Group(click.Group):
    """Turns Garrison's own errors into one clean line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GarrisonError as exc:
            _fail(str(exc))


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console.print(table)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="garrison")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def cli(verbose: bool) -> None:
    """Garrison: zero-trust access gateway for restricted AI models."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# ── bootstrap and serving ──────────────────────────────────────────────────────────────────
@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Where the database, key files and config go.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
def init(data_dir: Path, host: str, port: int) -> None:
    """Create the database, the key files (0600) and the first admin key."""
    done = do_init(data_dir, host=host, port=port)
    click.echo(f"config:   {done.config_path}")
    click.echo(f"database: {done.settings.database_url}")
    click.echo(f"keys:     {done.settings.key_dir} (mode 0600)")
    click.echo("")
    click.echo("First admin key (shown once; store it now):")
    click.echo(f"  {done.admin_key.key.token.reveal()}")


@cli.command()
@config_option
def serve(config_path: Path) -> None:
    """Run the gateway from the config file (environment overrides apply)."""
    from garrison.gateway.runtime import serve_forever

    settings = _settings(config_path)
    _run(serve_forever(settings))


def _run(coro: Any) -> None:
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(coro)


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the demo's state here (default: a new temporary directory).",
)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--upstream-port", default=0, type=int, help="Mock upstream port (0: any free).")
def demo(data_dir: Path | None, port: int, upstream_port: int) -> None:
    """Start a mock model server and a gateway with a seeded example, until Ctrl-C."""
    from garrison.demo import run_demo

    _run(run_demo(data_dir, port=port, upstream_port=upstream_port))


@cli.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, type=float)
@click.option("--tokens", default=16, show_default=True, type=int)
@click.option("--chunk-delay-ms", default=0.0, show_default=True, type=float)
def mock_upstream(
    host: str, port: int, latency_ms: float, tokens: int, chunk_delay_ms: float
) -> None:
    """An OpenAI- and Anthropic-compatible mock model server (deterministic output)."""
    from garrison.mock import MockConfig, run_mock_upstream

    click.echo(f"mock upstream on http://{host}:{port}/v1")
    run_mock_upstream(
        host, port, MockConfig(latency_ms=latency_ms, tokens=tokens, chunk_delay_ms=chunk_delay_ms)
    )


# ── directory ──────────────────────────────────────────────────────────────────────────────
def _query(settings: Settings, stmt: Any) -> list[Any]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(stmt))
    finally:
        engine.dispose()


@cli.group()
def org() -> None:
    """Organisations: the internal one and vendors."""


@org.command("add")
@click.argument("name")
@config_option
def org_add(name: str, config_path: Path) -> None:
    """Add an internal org (vendors: `garrison vendor add`)."""
    settings = _settings(config_path)
    org_id = open_directory(settings).create_org(name, OrgKind.INTERNAL, now=time.time())
    click.echo(org_id)


@org.command("list")
@config_option
@json_option
def org_list(config_path: Path, as_json: bool) -> None:
    rows = [
        dict(id=r.id, name=r.name, kind=r.kind, created=_time(r.created_at))
        for r in _query(_settings(config_path), sa.select(schema.orgs).order_by(schema.orgs.c.name))
    ]
    _print_rows(rows, ["id", "name", "kind", "created"], as_json, "Organisations")


@cli.group()
def user() -> None:
    """Principals: people and service accounts."""


@user.command("add")
@click.argument("name")
@click.option("--org", "org_ref", required=True, help="Org name or id.")
@click.option(
    "--clearance",
    default="internal",
    show_default=True,
    type=click.Choice([lv.label for lv in Level]),
)
@click.option("--compartment", "compartments", multiple=True, help="Repeat for several.")
@click.option("--service", is_flag=True, help="A service account rather than a person.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="Admin role: security-admin, approver, vendor-manager, auditor; repeat.",
)
@config_option
def user_add(
    name: str,
    org_ref: str,
    clearance: str,
    compartments: tuple[str, ...],
    service: bool,
    roles: tuple[str, ...],
    config_path: Path,
) -> None:
    settings = _settings(config_path)
    principal_id = open_directory(settings).create_principal(
        name,
        org=org_ref,
        kind=PrincipalKind.SERVICE if service else PrincipalKind.HUMAN,
        clearance=Level.parse(clearance),
        compartments=compartments,
        roles=roles,
        now=time.time(),
    )
    click.echo(principal_id)


@user.command("list")
@config_option
@json_option
def user_list(config_path: Path, as_json: bool) -> None:
    p, o = schema.principals, schema.orgs
    stmt = sa.select(p, o.c.name.label("org")).join(o, o.c.id == p.c.org_id).order_by(p.c.name)
    rows = [
        dict(
            id=r.id,
            name=r.name,
            org=r.org,
            kind=r.kind,
            clearance=Level(r.clearance).label,
            compartments=",".join(orjson.loads(r.compartments)),
            roles=",".join(orjson.loads(r.roles)),
            status=r.status,
        )
        for r in _query(_settings(config_path), stmt)
    ]
    _print_rows(
        rows,
        ["id", "name", "org", "kind", "clearance", "compartments", "roles", "status"],
        as_json,
        "Principals",
    )


@user.command("disable")
@click.argument("name")
@config_option
def user_disable(name: str, config_path: Path) -> None:
    open_directory(_settings(config_path)).set_principal_status(
        name, Status.DISABLED, now=time.time()
    )
    click.echo(f"disabled {name}")


@cli.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.argument("principal")
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
    principal: str,
    expires_in: str,
    networks: tuple[str, ...],
    note: str,
    canary: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """Create a key; the key is printed once and never again."""
    try:
        lifetime = parse_duration(expires_in)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None
    created = open_directory(_settings(config_path)).create_key(
        principal,
        now=time.time(),
        expires_in=lifetime,
        networks=networks,
        note=note,
        canary=canary,
    )
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "id": created.key.key_id,
                    "key": created.key.token.reveal(),
                    "expires_at": created.expires_at,
                }
            ).decode()
        )
        return
    click.echo(f"key id:  {created.key.key_id}")
    click.echo(f"expires: {_time(created.expires_at)}")
    click.echo("key (shown once):")
    click.echo(f"  {created.key.token.reveal()}")


@key.command("list")
@config_option
@json_option
def key_list(config_path: Path, as_json: bool) -> None:
    c, p = schema.credentials, schema.principals
    stmt = (
        sa.select(
            c.c.id,
            c.c.created_at,
            c.c.expires_at,
            c.c.networks,
            c.c.revoked_at,
            c.c.note,
            c.c.canary,
            p.c.name.label("principal"),
        )
        .join(p, p.c.id == c.c.principal_id)
        .order_by(c.c.created_at)
    )
    now = time.time()
    rows = []
    for r in _query(_settings(config_path), stmt):
        state = (
            "revoked"
            if r.revoked_at
            else ("expired" if r.expires_at and r.expires_at <= now else "active")
        )
        rows.append(
            dict(
                id=r.id,
                principal=r.principal,
                state=state,
                expires=_time(r.expires_at),
                networks=",".join(orjson.loads(r.networks)) or "any",
                note=r.note,
                canary=bool(r.canary),
            )
        )
    columns = ["id", "principal", "state", "expires", "networks", "note", "canary"]
    _print_rows(rows, columns, as_json, "Keys")


@key.command("revoke")
@click.argument("key_id")
@click.option("--reason", required=True)
@config_option
def key_revoke(key_id: str, reason: str, config_path: Path) -> None:
    open_directory(_settings(config_path)).revoke_key(key_id, now=time.time(), reason=reason)
    click.echo(f"revoked {key_id}")


@cli.group()
def model() -> None:
    """The model registry."""


@model.command("add")
@click.argument("name")
@click.option("--upstream-url", required=True, help="Base URL, e.g. http://10.0.0.5:8000/v1")
@click.option(
    "--upstream-model", default=None, help="The upstream's own model name (default: NAME)."
)
@click.option(
    "--api", default="openai", show_default=True, type=click.Choice([a.value for a in UpstreamApi])
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
@click.option(
    "--level", default="internal", show_default=True, type=click.Choice([lv.label for lv in Level])
)
@click.option("--compartment", "compartments", multiple=True)
@config_option
def model_add(
    name: str,
    upstream_url: str,
    upstream_model: str | None,
    api: str,
    auth_style: str | None,
    upstream_key_env: str | None,
    level: str,
    compartments: tuple[str, ...],
    config_path: Path,
) -> None:
    upstream_api = UpstreamApi(api)
    style = (
        AuthStyle(auth_style)
        if auth_style
        else (AuthStyle.X_API_KEY if upstream_api is UpstreamApi.ANTHROPIC else AuthStyle.BEARER)
    )
    upstream_key = None
    if upstream_key_env:
        upstream_key = os.environ.get(upstream_key_env)
        if not upstream_key:
            raise click.BadParameter(
                f"environment variable {upstream_key_env} is empty or unset",
                param_hint="--upstream-key-env",
            )
    elif style is not AuthStyle.NONE:
        style = AuthStyle.NONE
    model_id = open_directory(_settings(config_path)).create_model(
        name,
        upstream_url=upstream_url,
        upstream_model=upstream_model or name,
        api=upstream_api,
        auth_style=style,
        level=Level.parse(level),
        compartments=compartments,
        upstream_key=upstream_key,
        now=time.time(),
    )
    click.echo(model_id)


@model.command("list")
@config_option
@json_option
def model_list(config_path: Path, as_json: bool) -> None:
    m = schema.models
    rows = [
        dict(
            id=r.id,
            name=r.name,
            upstream=r.upstream_url,
            upstream_model=r.upstream_model,
            api=r.api,
            level=Level(r.level).label,
            compartments=",".join(orjson.loads(r.compartments)),
            upstream_key="sealed" if r.upstream_key_sealed else "none",
        )
        for r in _query(_settings(config_path), sa.select(m).order_by(m.c.name))
    ]
    _print_rows(
        rows,
        [
            "id",
            "name",
            "upstream",
            "upstream_model",
            "api",
            "level",
            "compartments",
            "upstream_key",
        ],
        as_json,
        "Models",
    )


@cli.group()
def keys() -> None:
    """Key files: the pepper and the sealing keys."""


@keys.command("rotate-seal")
@config_option
def keys_rotate_seal(config_path: Path) -> None:
    """Add a new sealing key and re-encrypt every upstream credential under it."""
    settings = _settings(config_path)
    add_seal_key(settings.key_dir)
    sealer = Sealer.from_dir(settings.key_dir)
    count = open_directory(settings).reseal_upstream_keys(sealer, now=time.time())
    click.echo(f"new sealing key added; {count} upstream credential(s) re-encrypted")


def _register() -> None:
    from garrison.cli.audit_cmds import audit
    from garrison.cli.vendor_cmds import vendor

    cli.add_command(audit)
    cli.add_command(vendor)


_register()


def main() -> None:
    cli(prog_name="garrison")


if __name__ == "__main__":
    main()
