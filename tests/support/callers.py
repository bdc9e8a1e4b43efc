"""Callers and models made through the admin API, for end-to-end tests that set up state only
through the public interface."""

from __future__ import annotations

from typing import Any

from tests.support.admin import admin_call
from tests.support.world import World


async def service_key(world: World, name: str = "svc-caller") -> str:
    """A service principal (org internal, clearance internal) and a key for it."""
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": name, "org": "internal", "kind": "service"},
    )
    assert status == 201, body
    status, body = await admin_call(world, world.admin_key, "POST", "/keys", {"principal": name})
    assert status == 201, body
    key: str = body["key"]
    return key


async def register_model(world: World, name: str, port: int, **fields: Any) -> None:
    """A model at level internal served by the upstream on 127.0.0.1:``port``; reloaded."""
    body = {"name": name, "upstream_url": f"http://127.0.0.1:{port}/v1", **fields}
    status, answer = await admin_call(world, world.admin_key, "POST", "/models", body)
    assert status == 201, answer
    await world.reload()
