"""The Server header names Garrison on every path, never Python or aiohttp and their
versions: answers from the handlers, and requests so malformed that aiohttp itself answers."""

from __future__ import annotations

import asyncio

import pytest

from garrison.gateway.http_server import SERVER_NAME
from garrison.gateway.limits import GatewayLimits
from tests.support.world import World

pytestmark = pytest.mark.e2e

_LONG = b"x" * (GatewayLimits().max_header_field_bytes + 10)


async def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes; the response head the gateway sends back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


def server_values(head: bytes) -> list[bytes]:
    return [
        line.partition(b":")[2].strip()
        for line in head.split(b"\r\n")[1:]
        if line.partition(b":")[0].strip().lower() == b"server"
    ]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"garbage\r\n\r\n", b"400", id="not-http"),
        pytest.param(b"GET /\xff\xfe HTTP/1.1\r\nHost: g\r\n\r\n", b"400", id="raw-bytes-in-path"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: g\r\nx: \x01\r\n\r\n", b"400", id="control-char"),
        pytest.param(b"GET / HTTP/9.9\r\nHost: g\r\n\r\n", b"400", id="bad-version"),
        pytest.param(b"GET /" + _LONG + b" HTTP/1.1\r\n\r\n", b"400", id="long-line"),
        pytest.param(b"GET / HTTP/1.1\r\nx: " + _LONG + b"\r\n\r\n", b"400", id="long-header"),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            b"400",
            id="two-lengths",
        ),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n", b"200", id="health"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\nHost: g\r\n\r\n", b"401", id="unauthenticated"),
        pytest.param(b"GET /nowhere HTTP/1.1\r\nHost: g\r\n\r\n", b"404", id="unknown-path"),
        pytest.param(b"DELETE /v1/models HTTP/1.1\r\nHost: g\r\n\r\n", b"405", id="wrong-method"),
    ],
)
async def test_every_answer_names_only_garrison(
    world: World, request_bytes: bytes, status: bytes
) -> None:
    head = await exchange(world.gateway.port, request_bytes)
    assert head.split(b" ", 2)[1] == status, head
    assert server_values(head) == [SERVER_NAME.encode()], head
    assert b"aiohttp" not in head.lower() and b"python" not in head.lower()
