"""Connection limits: per-source caps (trusted proxies their own), a reserve that keeps
health checks and the admin API reachable, and a short idle deadline between requests.

Clients bind to 127.0.2.1, 127.0.3.1, ... to play different source addresses."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from garrison.gateway.connections import source_of
from garrison.gateway.limits import GatewayLimits
from tests.gateway.test_limits import (
    HEALTH,
    LIMIT_S,
    SLACK_S,
    chat_body,
    closed_by_server,
    read_response,
    request_head,
)
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def world_with(tmp_path: Path, **kw: Any) -> AsyncIterator[World]:
    proxies = kw.pop("trusted_proxies", ())
    world = await start_world(
        tmp_path / "w", limits=GatewayLimits(**kw), trusted_proxies=proxies, detect=False
    )
    try:
        yield world
    finally:
        await stop_world(world)


@contextlib.asynccontextmanager
async def connections(world: World, source: str, count: int) -> AsyncIterator[list[Conn]]:
    opened: list[Conn] = []
    try:
        for _ in range(count):
            opened.append(
                await asyncio.open_connection(
                    "127.0.0.1", world.gateway.port, local_addr=(source, 0)
                )
            )
        yield opened
    finally:
        for _, writer in opened:
            writer.close()
        for _, writer in opened:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def served(conn: Conn, request: bytes = HEALTH) -> int | None:
    """The status of one request on this connection, or None if it was dropped."""
    reader, writer = conn
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(SLACK_S):
            return (await read_response(reader))[0]
    except (ConnectionError, asyncio.IncompleteReadError):
        return None


async def test_one_source_cannot_hold_more_than_its_cap(tmp_path: Path) -> None:
    async with (
        world_with(tmp_path, max_connections_per_source=4) as world,
        connections(world, "127.0.2.1", 4) as held,
    ):
        assert [await served(c) for c in held] == [200] * 4
        async with connections(world, "127.0.2.1", 20) as flood:
            assert [await served(c) for c in flood] == [None] * 20
            # Another source is served while the first holds its whole share.
            async with connections(world, "127.0.3.1", 2) as other:
                assert [await served(c) for c in other] == [200, 200]
        table = world.gateway.http.connections
        assert table.by_source["127.0.2.1"] == 4
        assert table.refused >= 20
        # A freed slot is usable again (once the gateway has seen the close: waited for,
        # not a 0.1 s pause a loaded machine can outlast).
        held[0][1].close()
        deadline = time.monotonic() + 10
        while table.by_source.get("127.0.2.1", 0) >= 4:
            assert time.monotonic() < deadline, table.by_source
            await asyncio.sleep(0.01)
        async with connections(world, "127.0.2.1", 1) as again:
            assert await served(again[0]) == 200


async def test_trusted_proxy_gets_its_own_larger_cap(tmp_path: Path) -> None:
    async with (
        world_with(
            tmp_path,
            max_connections_per_source=2,
            max_connections_per_trusted_proxy=6,
            trusted_proxies=(ipaddress.ip_network("127.0.4.0/24"),),
        ) as world,
        connections(world, "127.0.4.1", 7) as via_proxy,
        connections(world, "127.0.2.1", 3) as direct,
    ):
        assert [await served(c) for c in via_proxy] == [200] * 6 + [None]
        assert [await served(c) for c in direct] == [200, 200, None]


async def test_reserve_keeps_health_and_admin_reachable_when_full(tmp_path: Path) -> None:
    async with (
        world_with(tmp_path, max_connections=6, connection_reserve=2) as world,
        connections(world, "127.0.2.1", 4) as data_plane,
    ):
        assert [await served(c) for c in data_plane] == [200] * 4
        async with connections(world, "127.0.3.1", 3) as late:
            # A reserve connection: the data plane is refused (503, API shape) and closed...
            body = chat_body()
            reader, _ = late[0]
            assert await served(late[0], request_head(world, length=len(body)) + body) == 503
            assert await closed_by_server(reader, within=SLACK_S) is not None
            assert world.mock.seen == []
            # ...health checks and the admin API are served...
            assert await served(late[1]) == 200
            admin = b"GET /admin/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            assert await served(late[1], admin) == 401
            # ...and past the process cap a connection is dropped.
            assert await served(late[2]) is None


async def test_reserve_refusal_is_in_the_api_shape(tmp_path: Path) -> None:
    async with (
        world_with(tmp_path, max_connections=2, connection_reserve=1) as world,
        connections(world, "127.0.2.1", 2) as conns,
    ):
        body = chat_body()
        conns[1][1].write(request_head(world, length=len(body)) + body)
        status, raw = await read_response(conns[1][0])
        assert status == 503
        assert orjson.loads(raw)["error"]["code"] == "overloaded"


async def test_idle_deadline_is_rearmed_after_each_request(tmp_path: Path) -> None:
    async with (
        world_with(tmp_path, keepalive_timeout_s=LIMIT_S) as world,
        connections(world, "127.0.2.1", 1) as (conn,),
    ):
        start = time.monotonic()
        for _ in range(4):  # 4 x 0.7 of the deadline: longer than it, in total
            assert await served(conn) == 200
            await asyncio.sleep(LIMIT_S * 0.7)
        assert await served(conn) == 200
        assert time.monotonic() - start > 2 * LIMIT_S
        idle = await closed_by_server(conn[0], within=LIMIT_S + SLACK_S)
        assert idle is not None and idle >= LIMIT_S - 0.1


def test_ipv6_sources_are_counted_per_prefix() -> None:
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert source_of("2001:db8:0:1::1") != source_of("2001:db8::1")
    assert source_of("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_of("10.1.2.3") == "10.1.2.3"
