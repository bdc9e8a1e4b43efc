"""Networks written in IPv4-mapped IPv6 form (``::ffff:127.0.0.2/128``) mean the IPv4 network.

Client addresses are compared in IPv4 form, so before this a mapped lock, key binding or
vendor network was accepted and never matched. Set up through the admin HTTP API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.domain.networks import parse_address, parse_network
from tests.conftest import BACKENDS
from tests.support.admin import admin_call, invite_and_enroll
from tests.support.world import World, world_on

pytestmark = pytest.mark.e2e


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Each test on each database (locks, key bindings and vendor networks are stored)."""
    async with world_on(request.param, tmp_path) as w:
        yield w


USER = [{"role": "user", "content": "hello"}]


async def chat_status(world: World, key: str, local_addr: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": "assistant", "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        await resp.read()
        return resp.status


async def admin(world: World, method: str, path: str, body: Any = None) -> Any:
    status, payload = await admin_call(world, world.admin_key, method, path, body)
    assert status in (200, 201), payload
    return payload


async def test_mapped_network_lock_matches_the_ipv4_clients_it_names(world: World) -> None:
    carol = world.keys["carol"]
    lock = await admin(
        world,
        "POST",
        "/locks",
        {"kind": "network", "target": "::ffff:127.0.0.2/128", "reason": "mapped form"},
    )
    assert lock["target"] == "127.0.0.2/32"
    await world.reload()
    assert await chat_status(world, carol, "127.0.0.2") == 403
    assert await chat_status(world, carol, "127.0.0.3") == 200


async def test_key_bound_to_a_mapped_network_works_from_it_and_only_there(world: World) -> None:
    # An admin-made key (for a service account: admins make keys for nobody else).
    await admin(
        world, "POST", "/principals", {"name": "svc-mapped", "org": "internal", "kind": "service"}
    )
    created = await admin(
        world,
        "POST",
        "/keys",
        {"principal": "svc-mapped", "networks": ["::ffff:127.0.0.0/120"], "expires_in_s": 3600},
    )
    assert created["provenance"] == "service"
    await world.reload()
    assert await chat_status(world, created["key"], "127.0.0.2") == 200
    assert await chat_status(world, created["key"], "127.0.1.2") == 401


async def test_own_key_enrolled_for_a_mapped_network_works_from_it_and_only_there(
    world: World,
) -> None:
    # A person's own key, bound at enrollment.
    status, created = await invite_and_enroll(
        world, world.admin_key, "carol", networks=["::ffff:127.0.0.0/120"], expires_in_s=3600
    )
    assert status == 201, created
    assert created["provenance"] == "enrolled"
    await world.reload()
    assert await chat_status(world, created["key"], "127.0.0.2") == 200
    assert await chat_status(world, created["key"], "127.0.1.2") == 401


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("::ffff:127.10.0.0/112", "127.10.0.0/16"),
        ("::ffff:7f0a:0/112", "127.10.0.0/16"),
        ("::ffff:10.0.0.1/128", "10.0.0.1/32"),
        ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::/0", "::/0"),  # wider than the mapped block: stays IPv6
    ],
)
def test_parse_network_writes_mapped_networks_as_ipv4(text: str, canonical: str) -> None:
    assert parse_network(text) == ipaddress.ip_network(canonical)


def test_parse_network_keeps_strictness_about_host_bits() -> None:
    with pytest.raises(ValueError):
        parse_network("::ffff:127.10.0.1/112")
    assert parse_network("::ffff:127.10.0.1/112", strict=False) == ipaddress.ip_network(
        "127.10.0.0/16"
    )


def test_parse_address_writes_mapped_addresses_as_ipv4() -> None:
    assert parse_address("::ffff:127.10.0.5") == ipaddress.ip_address("127.10.0.5")
    assert parse_address("::ffff:127.10.0.5") in parse_network("::ffff:127.10.0.0/112")
