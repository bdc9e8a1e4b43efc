"""Shared fixtures: a running world (mock upstream + gateway on loopback)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.world import World, start_world, stop_world, world_on

# Gateways started in this process listen for metrics only where a test asks (their configs,
# written by `garrison init`, name the one default port: parallel workers would fight over it).
os.environ.setdefault("GARRISON_METRICS_LISTEN", "")


@pytest.fixture(scope="session", autouse=True)
def _pg_databases() -> Iterator[None]:
    """PostgreSQL test databases: those of killed earlier runs go at the start; this run's
    are dropped in the background as tests end, and the template at the end."""
    if pg.available():
        pg.drop_stale()
    yield
    pg.finish()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path)
    try:
        yield w
    finally:
        await stop_world(w)


# The two databases a gateway runs on; a test that takes ``any_world`` runs on each.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
async def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(request.param, tmp_path) as w:
        yield w
