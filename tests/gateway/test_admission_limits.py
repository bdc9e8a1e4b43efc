"""Admission after authentication: one key (or one principal) holding many slow uploads
cannot make another tenant's calls fail, and buffered body bytes stay within their budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.gateway.test_limits import (
    LIMIT_S,
    SLACK_S,
    MakeWorld,
    chat_body,
    denial_reasons,
    error_code,
    make_world,
    post,
    read_response,
)
from tests.support.world import World

pytestmark = pytest.mark.e2e

__all__ = ["make_world"]  # the fixture, re-used


def head(key: str, length: int) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n"
    )


@contextlib.asynccontextmanager
async def slow_uploads(
    world: World, key: str, count: int, length: int = 1000
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` uploads that send their head and one byte of a ``length``-byte body, then
    stall (a slow client holding its slot)."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", world.gateway.port)
            writer.write(head(key, length) + b"{")
            await writer.drain()
            readers.append(reader)
            writers.append(writer)
        yield readers
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def answered(readers: list[asyncio.StreamReader], within: float) -> list[int]:
    """Statuses of the uploads the gateway answered within ``within`` seconds (in all)."""
    tasks = [asyncio.create_task(read_response(reader)) for reader in readers]
    done, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    statuses: list[int] = []
    for task in tasks:
        if task in done:
            status, raw = task.result()
            assert error_code(raw) == "rate_limited"
            statuses.append(status)
    return statuses


async def test_one_key_holding_slow_uploads_cannot_fail_another_tenant(
    make_world: MakeWorld,
) -> None:
    world = await make_world(max_concurrent_requests=8, max_concurrent_per_credential=3)
    async with slow_uploads(world, world.keys["alice"], 20) as readers:
        # Every upload past the key's 3 slots is refused at once; 3 stay held.
        refused = await answered(readers, within=1.0)
        assert refused == [429] * 17
        assert sum(world.gateway.state.admission.by_credential.values()) == 3
        # Another tenant is served while alice's uploads stall.
        for _ in range(5):
            status, raw = await post(world, chat_body(), headers=bob(world))
            assert status == 200, raw
    reasons = await denial_reasons(world)
    assert reasons == [["credential.concurrency"]] * 17
    assert world.gateway.state.admission.by_credential == {}


async def test_one_principal_over_many_keys_is_capped(make_world: MakeWorld) -> None:
    world = await make_world(max_concurrent_per_credential=2, max_concurrent_per_principal=3)
    extra = world.directory.create_key("alice", now=time.time()).key.token.reveal()
    await world.reload()
    async with (
        slow_uploads(world, world.keys["alice"], 2) as first,
        slow_uploads(world, extra, 2) as second,
    ):
        assert await answered(first, within=1.0) == []
        assert await answered(second, within=1.0) == [429]
    assert await denial_reasons(world) == [["principal.concurrency"]]


async def test_slow_body_is_cut_by_its_deadline_and_recorded(make_world: MakeWorld) -> None:
    world = await make_world(body_read_timeout_s=LIMIT_S, max_concurrent_per_credential=50)
    start = time.monotonic()
    async with slow_uploads(world, world.keys["alice"], 10) as readers:
        statuses = []
        for reader in readers:
            async with asyncio.timeout(LIMIT_S + SLACK_S):
                status, raw = await read_response(reader)
            assert error_code(raw) == "request_timeout"
            statuses.append(status)
    assert statuses == [408] * 10
    assert time.monotonic() - start < LIMIT_S + 3 * SLACK_S
    reasons = await denial_reasons(world)
    assert reasons == [["request.read_timeout"]] * 10
    denied = world.events("request.denied")
    assert {e["principal_id"] for e in denied} == {
        world.gateway.state.snapshot.credentials[denied[0]["credential_id"]].principal_id
    }
    assert world.mock.seen == []


async def test_buffered_body_budget_holds_and_spares_other_principals(
    make_world: MakeWorld,
) -> None:
    kib = 1024
    world = await make_world(
        max_buffered_body_bytes=100 * kib,
        max_buffered_body_bytes_per_principal=40 * kib,
        max_concurrent_per_credential=50,
    )
    admission = world.gateway.state.admission
    # alice declares 15 KiB bodies and stalls: two fit her 40 KiB share, the rest are 429.
    async with slow_uploads(world, world.keys["alice"], 6, length=15 * kib) as readers:
        assert await answered(readers, within=1.0) == [429] * 4
        assert admission.buffered == 30 * kib
        # bob still gets a 30 KiB body through.
        status, raw = await post(world, chat_body(30 * kib), headers=bob(world))
        assert status == 200, raw
        # carol and bob fill the process budget with stalled uploads; then the next is 503.
        async with (
            slow_uploads(world, world.keys["bob"], 2, length=20 * kib) as bobs,
            slow_uploads(world, world.keys["carol"], 1, length=25 * kib) as carols,
        ):
            assert await answered(bobs + carols, within=1.0) == []
            assert admission.buffered == 95 * kib
            carol = {"authorization": f"Bearer {world.keys['carol']}"}
            status, raw = await post(world, chat_body(10 * kib), headers=carol)
            assert status == 503 and orjson.loads(raw)["error"]["code"] == "overloaded"
    assert admission.peak_buffered <= 100 * kib
    reasons = await denial_reasons(world)
    assert reasons.count(["principal.body_budget"]) == 4
    assert reasons.count(["gateway.body_budget"]) == 1
    # The uploads' connections are closed: their reservations are given back once the
    # gateway sees the close (waited for, not a 0.1 s pause a loaded machine can outlast).
    deadline = time.monotonic() + 10
    while admission.buffered != 0:
        assert time.monotonic() < deadline, admission.buffered
        await asyncio.sleep(0.01)


def bob(world: World) -> dict[str, str]:
    return {"authorization": f"Bearer {world.keys['bob']}"}
