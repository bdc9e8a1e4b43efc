"""``garrison db``: the database's schema (``garrison db upgrade``)."""

from __future__ import annotations

from pathlib import Path

import click
import sqlalchemy as sa

from garrison.cli.options import config_option
from garrison.config import load_settings
from garrison.errors import GarrisonError
from garrison.store import make_engine, revisions


@click.group()
def db() -> None:
    """The database's schema."""


@db.command()
@config_option
def upgrade(config_path: Path) -> None:
    """Run the schema migrations up to this version's newest revision on the configured
    database (SQLite or PostgreSQL); prints from → to. Running it again changes nothing."""
    settings = load_settings(config_path)
    engine = make_engine(settings.database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        done = revisions.upgrade(engine)
    except sa.exc.OperationalError as exc:
        raise GarrisonError(f"cannot upgrade {where}: {exc.orig}") from None
    finally:
        engine.dispose()
    before = done.before or "empty"
    if done.changed:
        click.echo(f"{where}: upgraded {before} → {done.after}")
    else:
        click.echo(f"{where}: already at {done.after} (head); nothing to do")
