"""Fixtures shared by the admin API tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from garrison.domain import AuthStyle, Level, UpstreamApi
from tests.conftest import BACKENDS
from tests.support.admin import Admins, make_admin
from tests.support.world import UPSTREAM_KEY, World, world_on


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Every admin test runs on each database: SQLite (the embedded default) and
    PostgreSQL (a fresh database of its own; skipped with the stated reason without one)."""
    async with world_on(request.param, tmp_path) as w:
        yield w


@pytest.fixture
async def admins(world: World) -> AsyncIterator[Admins]:
    """A second security-admin (``sec_2``), ``ivan`` cleared critical with no roles, and two
    critical models, ``oracle`` and ``cyber-oracle`` (in [cyber])."""
    sec_2 = make_admin(world, "sec-2", ["security-admin"])
    ivan = make_admin(world, "ivan", [], clearance=Level.CRITICAL)
    now = time.time()
    common: dict[str, Any] = dict(
        upstream_url=f"http://127.0.0.1:{world.mock.port}/v1",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        upstream_key=UPSTREAM_KEY,
        now=now,
    )
    world.directory.create_model("oracle", level=Level.CRITICAL, **common)
    world.directory.create_model(
        "cyber-oracle", level=Level.CRITICAL, compartments=["cyber"], **common
    )
    await world.reload()
    yield Admins(world, sec_2, ivan)
