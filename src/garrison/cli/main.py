"""The ``garrison`` command.

``init``, ``serve``, ``demo``, ``mock-upstream``, ``keys`` and ``audit`` work on this host's
files; every directory command (``org``, ``vendor``, ``user``, ``service``, ``key``,
``model``, ``whoami``) drives the admin API of a running gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from garrison import __version__
from garrison.bootstrap import FIRST_ADMIN, open_directory, recover_admin_key, write_credential
from garrison.bootstrap import init as do_init
from garrison.cli import exits
from garrison.cli.exits import ExitCode
from garrison.cli.options import CONFIG_META, DEFAULT_DATA_DIR, config_option
from garrison.config import Settings, load_settings
from garrison.errors import GarrisonError
from garrison.keyring import Sealer, add_seal_key
from garrison.log_format import LOG_FORMATS
from garrison.log_format import configure as configure_logs
from garrison.safe_text import terminal_safe


def _settings(config_path: Path) -> Settings:
    return load_settings(config_path)


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> None:
    # One line, verbatim: no markup parsing (messages may hold brackets), no wrapping.
    prefix = click.style("error:", fg="red")
    click.echo(f"{prefix} {terminal_safe(' '.join(message.split()))}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns Garrison's own errors into one clean line and the exit code of its kind
    (``garrison.cli.exits``: the one table every command follows)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # ``serve`` and the other host commands defined here run without the directory
        # commands' modules (httpx, rich, markdown: ~10 MB the gateway would keep resident);
        # any other name brings them in first.
        if cmd_name not in _HOST_COMMANDS:
            _register()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GarrisonError as exc:
            _fail(str(exc), exits.for_error(exc))


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="garrison")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Config file for every command (also accepted after the command).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=lambda: os.environ.get("GARRISON_LOG_FORMAT", "text"),
    show_default="text, or $GARRISON_LOG_FORMAT",
    help="Logs on standard error as text, or one JSON object per line (with request ids).",
)
@click.option(
    "--no-input",
    is_flag=True,
    help="Never ask a question (scripts): say what to run instead ($GARRISON_NO_INPUT=1 too).",
)
@click.option(
    "--client-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Client certificate (PEM) to present to the admin API, for a key bound to it "
    "($GARRISON_CLIENT_CERT, [admin] client_cert_file).",
)
@click.option(
    "--client-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Its private key, if not in the certificate's file ($GARRISON_CLIENT_KEY).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    verbose: bool,
    config_path: Path | None,
    log_format: str,
    no_input: bool,
    client_cert: Path | None,
    client_key: Path | None,
) -> None:
    """Garrison: zero-trust access gateway for restricted AI models."""
    if config_path is not None:
        ctx.meta[CONFIG_META] = config_path
    if client_key is not None and client_cert is None:
        raise click.UsageError("--client-key needs --client-cert")
    if client_cert is not None:
        from garrison.cli.client import CLIENT_CERT_META

        ctx.meta[CLIENT_CERT_META] = (client_cert, client_key)
    if no_input:
        from garrison.cli.client import NO_INPUT_META

        ctx.meta[NO_INPUT_META] = True
    configure_logs(level=logging.INFO if verbose else logging.WARNING, fmt=log_format)


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
@click.option(
    "--admin",
    "admins",
    multiple=True,
    help="A first security-admin; repeat (two for two-person rules). Default: one, 'admin'.",
)
@click.option(
    "--database-url",
    envvar="GARRISON_DATABASE_URL",
    default=None,
    show_default="sqlite in DATA_DIR, or $GARRISON_DATABASE_URL",
    help="Put the directory in this database, e.g. postgresql+psycopg://garrison@db/garrison "
    "(empty, or migrated by `garrison db upgrade`); key files stay in DATA_DIR.",
)
def init(
    data_dir: Path, host: str, port: int, admins: tuple[str, ...], database_url: str | None
) -> None:
    """Create the database, the key files (0600) and the first security-admins, each with a
    one-time enrollment code (no key is made here: each admin enrolls)."""
    done = do_init(
        data_dir,
        host=host,
        port=port,
        admins=admins or (FIRST_ADMIN,),
        database_url=database_url or None,
    )
    shown = sa.engine.make_url(done.settings.database_url).render_as_string(hide_password=True)
    click.echo(f"config:   {done.config_path}")
    click.echo(f"database: {shown}")
    click.echo(f"keys:     {done.settings.key_dir} (mode 0600)")
    click.echo("")
    click.echo("Enrollment codes (shown once, single use, valid 24 h; deliver each to its admin):")
    for code in done.codes:
        click.echo(f"  {code.name}: {code.code.reveal()}")
    click.echo("")
    if done.lone_admin:
        warn = click.style("WARNING:", fg="red", bold=True)
        click.echo(
            f"{warn} only one admin. Two-person changes (raising access, inviting approvers, "
            "lifting a lockdown) need a second security-admin and cannot be made until one "
            "exists; run `garrison init --admin A --admin B` for a usable deployment.",
            err=True,
        )
    click.echo(
        "Next: `garrison serve`; each admin runs `garrison enroll CODE --save` (the key goes "
        f"to {done.settings.admin_credential_file}, mode 0600) or `--key-file PATH` on their "
        "own machine, then `garrison whoami`."
    )


@cli.command()
@config_option
@click.option("--port", type=int, default=None, help="Listen here (default: the config's).")
def serve(config_path: Path, port: int | None) -> None:
    """Run the gateway from the config file (environment overrides apply)."""
    import dataclasses

    from garrison.cli.serving import announce, database_errors, port_errors
    from garrison.domain.networks import parse_listen
    from garrison.server import serve_forever

    settings = _settings(config_path)
    if port is not None:
        settings = dataclasses.replace(settings, port=port)
    ports = {settings.port: "--port (or [gateway] port in the config)"}
    if settings.admin_listen:
        ports[parse_listen(settings.admin_listen)[1]] = "[admin] listen in the config"
    with database_errors(), port_errors(ports):
        _run(serve_forever(settings, on_ready=lambda bound: announce(settings, bound)))


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
    from garrison.cli.serving import port_errors
    from garrison.demo import run_demo

    with port_errors({port: "--port", upstream_port: "--upstream-port"}):
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


@cli.command("recover-admin")
@click.option("--principal", default=FIRST_ADMIN, show_default=True, help="A security-admin.")
@config_option
def recover_admin(principal: str, config_path: Path) -> None:
    """Break glass: issue a new admin key on this host (needs the key files), written to the
    config's credential file. For when every admin key has expired or been lost. Audited,
    raises a critical alert; the key approves nothing."""
    settings = _settings(config_path)
    if settings.admin_credential_file is None:
        _fail("the config has no [admin] credential_file to write the key to")
        return
    directory = open_directory(settings)
    try:
        created = recover_admin_key(directory, principal, now=time.time())
    finally:
        directory.engine.dispose()
    write_credential(settings.admin_credential_file, created.key.token.reveal())
    click.echo(
        f"new key {created.key.key_id} for {principal} written to "
        f"{settings.admin_credential_file} (mode 0600)"
    )
    click.echo(
        click.style("BREAK GLASS:", fg="red", bold=True)
        + " recorded in the audit log and raised as a critical alert. This key (provenance "
        "break-glass) administers but approves nothing; have another admin invite "
        f"{principal} again and enroll.",
        err=True,
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


@keys.command("rotate-token")
@config_option
def keys_rotate_token(config_path: Path) -> None:
    """Add a new token-signing key (the older ones still verify tokens until they expire)."""
    from garrison.identity.access_tokens import TokenSigner, rotate_token_key

    settings = _settings(config_path)
    TokenSigner.from_dir(settings.key_dir)  # a key directory from before tokens gets its file
    kid = rotate_token_key(settings.key_dir)
    click.echo(f"new token-signing key {kid}; restart the gateway processes to sign with it")


# Commands defined in this module that need none of the registered ones: a call naming one of
# them leaves the others unimported (``keys`` is not here: ``keys audit`` is registered).
_HOST_COMMANDS = frozenset({"serve", "init", "demo", "mock-upstream", "recover-admin"})
_REGISTERED: list[bool] = []


def _register() -> None:
    """Add the directory, audit and other commands (once; on first use)."""
    if _REGISTERED:
        return
    _REGISTERED.append(True)
    from garrison.cli import (
        access_cmds,
        curl_cmd,
        db_cmds,
        detect_cmds,
        directory_cmds,
        identity_cmds,
        key_cmds,
        login_cmds,
        model_cmds,
        ops_cmds,
        response_cmds,
    )
    from garrison.cli.audit_cmds import audit
    from garrison.cli.vendor_cmds import vendor

    cli.add_command(audit)
    cli.add_command(db_cmds.db)
    cli.add_command(vendor)
    cli.add_command(curl_cmd.curl)
    cli.add_command(identity_cmds.enroll)
    cli.add_command(login_cmds.login)
    cli.add_command(login_cmds.logout)
    cli.add_command(login_cmds.sessions)
    keys.add_command(identity_cmds.keys_audit)
    for command in (
        directory_cmds.whoami,
        directory_cmds.org,
        directory_cmds.user,
        directory_cmds.service,
        key_cmds.key,
        model_cmds.model,
        response_cmds.lock,
        response_cmds.unlock,
        response_cmds.locks,
        response_cmds.incident,
        access_cmds.access,
        access_cmds.approvals,
        access_cmds.changes,
        access_cmds.change,
        access_cmds.policy,
        detect_cmds.alerts,
        detect_cmds.alert,
        detect_cmds.rules,
        detect_cmds.drill,
        ops_cmds.backup,
        ops_cmds.completion,
    ):
        cli.add_command(command)


def main() -> None:
    cli(prog_name="garrison")


if __name__ == "__main__":
    main()
