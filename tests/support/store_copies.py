"""A seeded directory made once per test module and copied for each test, on either backend:
the data directory (key files; SQLite's database file) is copied with ``shutil``, and a
PostgreSQL database is cloned with ``CREATE DATABASE … TEMPLATE`` (~0.1 s)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

from garrison.config import Settings
from tests.support import pg


@contextlib.contextmanager
def template_database(backend: str) -> Iterator[str | None]:
    """Where a module's seeded template lives: ``None`` (SQLite in its data directory) or a
    fresh migrated PostgreSQL database, dropped when the module is done."""
    if backend == "sqlite":
        yield None
        return
    with pg.fresh_database() as url:
        yield url


@contextlib.contextmanager
def working_copy(source: Path, template_url: str | None, data: Path) -> Iterator[Settings]:
    """A copy of the seeded data directory ``source`` at ``data`` and, on PostgreSQL, of the
    template database; yields the copy's settings."""
    shutil.copytree(source, data)
    settings = Settings.for_data_dir(data)
    if template_url is None:
        yield settings
        return
    with pg.copy_of(template_url) as url:
        yield dataclasses.replace(settings, database_url=url)
