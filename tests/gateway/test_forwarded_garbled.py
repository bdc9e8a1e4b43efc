"""Attack: behind an RFC 7239 proxy, hide from a network lock by garbling your own element.

A proxy configured the usual way (nginx ``proxy_set_header Forwarded "$http_forwarded,
for=$remote_addr"``) appends its element to the client's line. The client sends
``Forwarded: for="10.0.0.1`` (an unclosed quote): the whole line failed to parse, the
proxy's element with it, and the walk stopped at the proxy itself, so the caller's address
became the trusted proxy's — outside every network lock placed on the caller's network.
Each comma-separated element is now parsed on its own: garbage on the left stops the walk
only after the proxy's element has named the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from garrison.edge.client_address import ForwardedHeader, client_address, parse_address
from tests.gateway.test_forwarded_spoofing import PROXY, status_of
from tests.support.admin import admin_call
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

ATTACKER = "198.51.100.7"


@pytest.fixture
async def behind_rfc7239_proxy(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(
        tmp_path, trusted_proxies=PROXY, forwarded_header=ForwardedHeader.FORWARDED
    )
    try:
        yield w
    finally:
        await stop_world(w)


async def test_a_garbled_client_element_does_not_hide_the_proxys_element(
    behind_rfc7239_proxy: World,
) -> None:
    world = behind_rfc7239_proxy
    status, lock = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "network", "target": "198.51.100.0/24", "reason": "attacker network"},
    )
    assert status in (200, 201), lock
    await world.reload()
    carol = world.keys["carol"]
    assert await status_of(world, carol, [("Forwarded", f"for={ATTACKER}")]) == 403
    for garbage in ('for="10.0.0.1', "for=[::1", "for", "x=y=z", 'for="a\\'):
        line = f"{garbage}, for={ATTACKER}"
        assert await status_of(world, carol, [("Forwarded", line)]) == 403, garbage


def test_garbage_to_the_left_stops_the_walk_after_the_client() -> None:
    peer = parse_address("127.0.0.1")
    assert peer is not None
    header = ForwardedHeader.FORWARDED
    line = f'for="10.0.0.1, for=127.0.0.5, for={ATTACKER}'
    assert str(client_address(peer, [line], PROXY, header)) == ATTACKER
    # A trusted hop to the right of the garbage: the walk stops at that hop, as before.
    trusted = "127.0.0.9"
    line = f'for="10.0.0.1, for={trusted}'
    proxies = (*PROXY, ipaddress.ip_network(f"{trusted}/32"))
    assert str(client_address(peer, [line], proxies, header)) == trusted
