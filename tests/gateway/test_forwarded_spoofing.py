"""Behind a trusted proxy, the client cannot choose its own address.

Raw HTTP, so the test controls exactly which header lines arrive: a line the client wrote
before the proxy's own line must not pick the source address (network binding, vendor
networks and detection all read it).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from garrison.edge.client_address import ForwardedHeader
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

# The test client connects from 127.0.0.1, which plays the trusted proxy. The key
# "bob-netbound" works only from 127.0.0.2.
PROXY = (ipaddress.ip_network("127.0.0.1/32"),)
ALLOWED = "127.0.0.2"
OUTSIDE = "198.51.100.7"
# A key used from outside its networks is refused like an unknown key.
REFUSED = 401


async def status_of(world: World, key: str, header_lines: list[tuple[str, str]]) -> int:
    body = orjson.dumps({"model": "assistant", "messages": [{"role": "user", "content": "hi"}]})
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{world.gateway.port}",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in header_lines),
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", world.gateway.port)
    try:
        writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(status_line.split()[1])


@pytest.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path, trusted_proxies=PROXY)
    try:
        yield w
    finally:
        await stop_world(w)


@pytest.fixture
async def behind_rfc7239_proxy(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(
        tmp_path, trusted_proxies=PROXY, forwarded_header=ForwardedHeader.FORWARDED
    )
    try:
        yield w
    finally:
        await stop_world(w)


async def test_client_written_line_before_the_proxys_line_is_not_believed(
    behind_proxy: World,
) -> None:
    key = behind_proxy.keys["bob-netbound"]
    lines = [("X-Forwarded-For", ALLOWED), ("X-Forwarded-For", OUTSIDE)]
    assert await status_of(behind_proxy, key, lines) == REFUSED


async def test_proxys_line_after_a_client_line_gives_the_real_address(
    behind_proxy: World,
) -> None:
    key = behind_proxy.keys["bob-netbound"]
    lines = [("X-Forwarded-For", f"{OUTSIDE}, 10.1.1.1"), ("X-Forwarded-For", ALLOWED)]
    assert await status_of(behind_proxy, key, lines) == 200


async def test_proxy_entry_with_a_port_is_parsed(behind_proxy: World) -> None:
    key = behind_proxy.keys["bob-netbound"]
    assert await status_of(behind_proxy, key, [("X-Forwarded-For", f"{ALLOWED}:51234")]) == 200


async def test_forwarded_header_is_ignored_when_x_forwarded_for_is_configured(
    behind_proxy: World,
) -> None:
    key = behind_proxy.keys["bob-netbound"]
    lines = [("Forwarded", f"for={ALLOWED}"), ("X-Forwarded-For", OUTSIDE)]
    assert await status_of(behind_proxy, key, lines) == REFUSED


async def test_rfc7239_client_element_on_an_earlier_line_is_not_believed(
    behind_rfc7239_proxy: World,
) -> None:
    key = behind_rfc7239_proxy.keys["bob-netbound"]
    lines = [("Forwarded", f"for={ALLOWED}"), ("Forwarded", f'for="{OUTSIDE}:4711";proto=http')]
    assert await status_of(behind_rfc7239_proxy, key, lines) == REFUSED


async def test_rfc7239_proxys_element_gives_the_real_address(
    behind_rfc7239_proxy: World,
) -> None:
    key = behind_rfc7239_proxy.keys["bob-netbound"]
    lines = [("Forwarded", f"for={OUTSIDE}"), ("Forwarded", f'for="{ALLOWED}:4711";proto=http')]
    assert await status_of(behind_rfc7239_proxy, key, lines) == 200


async def test_x_forwarded_for_is_ignored_when_forwarded_is_configured(
    behind_rfc7239_proxy: World,
) -> None:
    key = behind_rfc7239_proxy.keys["bob-netbound"]
    lines = [("X-Forwarded-For", ALLOWED), ("Forwarded", f"for={OUTSIDE}")]
    assert await status_of(behind_rfc7239_proxy, key, lines) == REFUSED
