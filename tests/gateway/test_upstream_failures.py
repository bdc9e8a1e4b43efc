"""When the model server misbehaves, the client gets a clean, scrubbed error in its API's shape,
and the audit log records how the call ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.gateway.limits import GatewayLimits
from garrison.mock import LEAK_HEADER, LEAK_HOST, LEAK_ORG, MockConfig
from tests.support.shapes import ANTHROPIC_ERROR_TYPES
from tests.support.world import UPSTREAM_KEY, World, start_world, stop_world

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
USER = [{"role": "user", "content": "hello"}]
ANTHROPIC_VERSION = "2023-06-01"
READ_TIMEOUT_S = 0.3

MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[MakeWorld]:
    worlds: list[World] = []

    async def make(*, mock_config: MockConfig | None = None, **limits: Any) -> World:
        w = await start_world(
            tmp_path / f"world{len(worlds)}",
            limits=GatewayLimits(**limits),
            mock_config=mock_config,
        )
        worlds.append(w)
        return w

    try:
        yield make
    finally:
        for w in worlds:
            await stop_world(w)


def _headers(world: World, path: str) -> dict[str, str]:
    key = world.keys["alice"]
    if path == MESSAGES:
        return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    return {"authorization": f"Bearer {key}"}


async def post(world: World, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    """POST ``body``; returns status, the gateway's request id and the whole response body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + path, json=body, headers=_headers(world, path)) as resp,
    ):
        return resp.status, resp.headers.get("x-request-id", ""), await resp.read()


def openai_error(raw: bytes) -> dict[str, Any]:
    doc = orjson.loads(raw)
    assert list(doc) == ["error"]
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    return dict(doc["error"])


def anthropic_error(raw: bytes) -> dict[str, Any]:
    doc = orjson.loads(raw)
    assert set(doc) == {"type", "error"} and doc["type"] == "error"
    assert set(doc["error"]) == {"type", "message"}
    assert doc["error"]["type"] in ANTHROPIC_ERROR_TYPES
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    return dict(doc["error"])


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) of each server-sent event in ``raw``."""
    events: list[tuple[str | None, bytes]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        events.append((name, b"\n".join(data)))
    return events


async def completed(world: World, request_id: str) -> dict[str, Any]:
    """The one ``request.completed`` event of ``request_id``."""
    await world.settle()
    events = [e for e in world.events("request.completed") if e["request_id"] == request_id]
    assert len(events) == 1, events
    return events[0]


def assert_scrubbed(raw: bytes, world: World) -> None:
    """No upstream host, address, org id, key or internal model name in ``raw``."""
    text = raw.decode()
    assert LEAK_HOST not in text
    assert LEAK_ORG not in text
    assert UPSTREAM_KEY not in text
    assert f":{world.mock.port}" not in text
    assert "127.0.0.1" not in text
    for upstream_model in ("fail-400", "fail-500", "mock-small", "hang", "drop"):
        assert upstream_model not in text.replace(f"m-{upstream_model}", ""), upstream_model


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# ── upstream 4xx: passed on, scrubbed ──────────────────────────────────────────────────────
async def test_upstream_400_reaches_client_as_scrubbed_400(world: World) -> None:
    status, request_id, raw = await post(world, CHAT, {"model": "m-fail-400", "messages": USER})
    assert status == 400
    error = openai_error(raw)
    assert error["type"] == "invalid_request_error"
    assert "maximum context length is 4096 tokens" in error["message"]  # the useful part
    assert_scrubbed(raw, world)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 400
    assert event["data"]["outcome"] == "upstream_400"


async def test_upstream_400_on_messages_reaches_client_as_scrubbed_anthropic_400(
    world: World,
) -> None:
    body = {"model": "claude-fail-400", "max_tokens": 8, "messages": USER}
    status, request_id, raw = await post(world, MESSAGES, body)
    assert status == 400
    error = anthropic_error(raw)
    assert error["type"] == "invalid_request_error"
    assert "prompt is too long" in error["message"]
    assert_scrubbed(raw, world)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 400
    assert event["data"]["outcome"] == "upstream_400"


async def test_upstream_400_leak_header_does_not_reach_client(world: World) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + CHAT,
            json={"model": "m-fail-400", "messages": USER},
            headers=_headers(world, CHAT),
        ) as resp,
    ):
        assert resp.status == 400
        assert LEAK_HEADER not in {name.lower() for name in resp.headers}


# ── upstream 5xx, hang, drop: generic errors ───────────────────────────────────────────────
async def test_upstream_500_becomes_generic_502(world: World) -> None:
    status, request_id, raw = await post(world, CHAT, {"model": "m-fail-500", "messages": USER})
    assert status == 502
    error = openai_error(raw)
    assert error["code"] == "upstream_error"
    assert error["message"] == "The model server failed to answer."
    assert b"Traceback" not in raw and b"CUDA" not in raw
    assert_scrubbed(raw, world)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 502
    assert event["data"]["outcome"] == "upstream_500"


async def test_upstream_hang_becomes_504(make_world: MakeWorld) -> None:
    world = await make_world(upstream_read_timeout_s=READ_TIMEOUT_S)
    status, request_id, raw = await post(world, CHAT, {"model": "m-hang", "messages": USER})
    assert status == 504
    error = openai_error(raw)
    assert error["code"] == "upstream_timeout"
    assert_scrubbed(raw, world)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 504
    assert event["data"]["outcome"] == "upstream_timeout"


async def test_upstream_dropped_connection_becomes_502(world: World) -> None:
    status, request_id, raw = await post(world, CHAT, {"model": "m-drop", "messages": USER})
    assert status == 502
    error = openai_error(raw)
    assert error["code"] == "upstream_error"
    assert_scrubbed(raw, world)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 502
    assert event["data"]["outcome"] == "upstream_error"


async def test_upstream_dropped_mid_stream_ends_stream_with_error_event(world: World) -> None:
    body = {"model": "m-drop", "messages": USER, "stream": True}
    status, request_id, raw = await post(world, CHAT, body)
    assert status == 200  # the stream had begun
    name, data = sse_events(raw)[-1]
    assert name is None
    error = openai_error(data)
    assert error["code"] == "upstream_error"
    assert_scrubbed(raw, world)
    event = await completed(world, request_id)
    assert event["data"]["outcome"] == "upstream_error"


# ── streams that stall or are abandoned ────────────────────────────────────────────────────
async def test_stream_stalling_mid_stream_ends_with_openai_error_event(
    make_world: MakeWorld,
) -> None:
    # The mock sends its first chunk at once, then waits far longer than the read timeout.
    world = await make_world(
        upstream_read_timeout_s=READ_TIMEOUT_S,
        mock_config=MockConfig(expected_api_key=UPSTREAM_KEY, chunk_delay_ms=30_000),
    )
    body = {"model": "assistant", "messages": USER, "stream": True}
    status, request_id, raw = await post(world, CHAT, body)
    assert status == 200
    events = sse_events(raw)
    assert len(events) >= 2
    first = orjson.loads(events[0][1])
    assert first["object"] == "chat.completion.chunk" and first["model"] == "assistant"
    name, data = events[-1]
    assert name is None
    error = openai_error(data)
    assert error["code"] == "upstream_timeout"
    event = await completed(world, request_id)
    assert event["data"]["status"] == 504
    assert event["data"]["outcome"] == "upstream_timeout"


async def test_stream_stalling_mid_stream_ends_with_anthropic_error_event(
    make_world: MakeWorld,
) -> None:
    world = await make_world(
        upstream_read_timeout_s=READ_TIMEOUT_S,
        mock_config=MockConfig(expected_api_key=UPSTREAM_KEY, chunk_delay_ms=30_000),
    )
    body = {"model": "claude", "max_tokens": 8, "messages": USER, "stream": True}
    status, request_id, raw = await post(world, MESSAGES, body)
    assert status == 200
    events = sse_events(raw)
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error"
    anthropic_error(data)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 504
    assert event["data"]["outcome"] == "upstream_timeout"


async def test_client_disconnect_mid_stream_cancels_upstream_call(world: World) -> None:
    body = {"model": "m-slow-stream", "messages": USER, "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(world.base + CHAT, json=body, headers=_headers(world, CHAT))
        assert resp.status == 200
        request_id = resp.headers["x-request-id"]
        assert await resp.content.readany()  # the stream is flowing
        resp.close()  # drop the connection mid-stream
    assert await wait_until(lambda: request_id in world.mock.cancelled_request_ids, timeout=1.0)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 499
    assert event["data"]["outcome"] == "client_closed"


async def test_client_disconnect_while_waiting_for_a_plain_answer_ends_the_call(
    world: World,
) -> None:
    """A client that goes away while its non-streamed call waits inside the call's deadline:
    the upstream request is dropped and the call recorded as 499 ``client_closed``."""
    body = {"model": "m-hang", "messages": USER}
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(
            session.post(world.base + CHAT, json=body, headers=_headers(world, CHAT))
        )
        assert await wait_until(lambda: bool(world.mock.seen_request_ids), timeout=5.0)
        (request_id,) = world.mock.seen_request_ids
        pending.cancel()  # drops the connection before any answer
        with pytest.raises(asyncio.CancelledError):
            await pending
    assert await wait_until(lambda: request_id in world.mock.cancelled_request_ids, timeout=5.0)
    event = await completed(world, request_id)
    assert event["data"]["status"] == 499
    assert event["data"]["outcome"] == "client_closed"
