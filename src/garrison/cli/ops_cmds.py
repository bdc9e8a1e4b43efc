"""Operating a deployment: backups and shell completion."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from garrison.cli.options import config_option
from garrison.config import load_settings
from garrison.errors import GarrisonError
from garrison.store import sqlite_path
from garrison.store.backup import backup as take_backup
from garrison.store.backup import pg_dump_command

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("dest", type=click.Path(path_type=Path))
@config_option
def backup(dest: Path, config_path: Path) -> None:
    """Copy the database, consistent as of one commit, into the new directory DEST
    (safe while the gateway serves; key files are not copied)."""
    settings = load_settings(config_path)
    source = sqlite_path(settings.database_url)
    if source is None:
        raise click.UsageError(
            "garrison backup copies the embedded SQLite database; this one is PostgreSQL: "
            "back it up with pg_dump (or your provider's snapshots), e.g. "
            f"{pg_dump_command(settings.database_url, dest)}"
        )
    if not source.exists():
        raise GarrisonError(f"no database at {source}")
    try:
        done = take_backup(source, dest, now=time.time())
    except FileExistsError as exc:
        raise click.UsageError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise GarrisonError(f"backup failed: {exc}") from None
    click.echo(f"database: {done.path} ({done.bytes:,} bytes, sha256 {done.sha256})")
    click.echo(
        f"audit:    {done.events:,} events, {done.checkpoints:,} checkpoints "
        f"(newest covers {done.newest_checkpoint_size:,})"
    )
    click.echo(f"took:     {done.seconds:.2f} s")
    click.echo("Key files are not in the backup: keep them apart and restore them with it.")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `garrison completion bash >
    /etc/bash_completion.d/garrison` or `eval "$(garrison completion zsh)"`."""
    from garrison.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one click knows
    click.echo(cls(cli, {}, "garrison", "_GARRISON_COMPLETE").source())
