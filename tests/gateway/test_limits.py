"""Each named limit of ``GatewayLimits`` holds: tightened in a test world, it bites."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.gateway.limits import GatewayLimits
from tests.support.servers import one_route_upstream
from tests.support.world import UPSTREAM_KEY, World, start_world, stop_world

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hello"}]
# The tightened value of every time limit under test, and the slack allowed past it.
LIMIT_S = 0.5
SLACK_S = 1.0

MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[MakeWorld]:
    worlds: list[World] = []

    async def make(**limits: Any) -> World:
        w = await start_world(tmp_path / f"world{len(worlds)}", limits=GatewayLimits(**limits))
        worlds.append(w)
        return w

    try:
        yield make
    finally:
        for w in worlds:
            await stop_world(w)


def auth(world: World) -> dict[str, str]:
    return {"authorization": f"Bearer {world.keys['alice']}"}


def chat_body(size: int | None = None, **extra: Any) -> bytes:
    """A valid chat body, padded to exactly ``size`` bytes when given."""
    body = {"model": "assistant", "messages": [{"role": "user", "content": ""}], **extra}
    raw = orjson.dumps(body)
    if size is None:
        return raw
    body["messages"] = [{"role": "user", "content": "x" * (size - len(raw))}]
    raw = orjson.dumps(body)
    assert len(raw) == size
    return raw


async def post(
    world: World, body: bytes, *, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    sent = {**auth(world), "content-type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + CHAT, data=body, headers=sent) as resp,
    ):
        return resp.status, await resp.read()


def error_code(raw: bytes) -> str:
    doc = orjson.loads(raw)
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    return str(doc["error"]["code"])


async def denial_reasons(world: World) -> list[list[str]]:
    await world.settle()
    return [e["data"]["reasons"] for e in world.events("request.denied")]


async def outcomes(world: World) -> list[str]:
    await world.settle()
    return [e["data"]["outcome"] for e in world.events("request.completed")]


# ── raw connections ────────────────────────────────────────────────────────────────────────
@contextlib.asynccontextmanager
async def raw_connection(
    world: World,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", world.gateway.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> float | None:
    """Seconds until the server closed the connection (reading whatever it sent), or None."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def request_head(world: World, *, length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Bearer " + world.keys["alice"].encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# ── upstreams for the upstream limits ──────────────────────────────────────────────────────
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def unanswering_listener() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang in the handshake."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@contextlib.asynccontextmanager
async def piecewise_upstream(body: bytes, pieces: int = 4) -> AsyncIterator[int]:
    """An upstream answering every call with ``body``, written in ``pieces`` with pauses."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        step = -(-len(body) // pieces)
        for offset in range(0, len(body), step):
            await response.write(body[offset : offset + step])
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    async with one_route_upstream("/v1/chat/completions", answer) as port:
        yield port


async def add_model(world: World, name: str, port: int) -> None:
    world.directory.create_model(
        name,
        upstream_url=f"http://127.0.0.1:{port}/v1",
        upstream_model="remote",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        upstream_key=UPSTREAM_KEY,
        level=Level.INTERNAL,
        now=time.time(),
    )
    await world.reload()


# ── max_body_bytes ─────────────────────────────────────────────────────────────────────────
async def test_max_body_bytes_admits_the_limit_and_refuses_one_byte_more(
    make_world: MakeWorld,
) -> None:
    world = await make_world(max_body_bytes=1024)
    at_limit, _ = await post(world, chat_body(1024))
    over_limit, raw = await post(world, chat_body(1025))
    assert at_limit == 200
    assert over_limit == 413 and error_code(raw) == "request_too_large"
    assert len(world.mock.seen) == 1
    assert await denial_reasons(world) == [["request.too_large"]]


# ── max_header_field_bytes ─────────────────────────────────────────────────────────────────
async def test_max_header_field_bytes_refuses_a_longer_header_unserved(
    make_world: MakeWorld,
) -> None:
    world = await make_world(max_header_field_bytes=1024)
    fits, _ = await post(world, chat_body(), headers={"x-pad": "a" * 900})
    assert fits == 200
    body = chat_body()
    async with raw_connection(world) as (reader, writer):
        writer.write(
            request_head(world, length=len(body), extra=b"X-Pad: " + b"a" * 2000 + b"\r\n")
        )
        writer.write(body)
        await writer.drain()
        status, _ = await read_response(reader)
        assert 400 <= status < 500
        assert await closed_by_server(reader, within=SLACK_S) is not None
    assert len(world.mock.seen) == 1  # only the call that fitted


# ── max_headers ────────────────────────────────────────────────────────────────────────────
async def test_max_headers_refuses_more_headers_unserved(make_world: MakeWorld) -> None:
    world = await make_world(max_headers=20)
    few = {f"x-h{i}": "v" for i in range(10)}
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    fits, _ = await post(world, chat_body(), headers=few)
    assert fits == 200
    body = chat_body()
    async with raw_connection(world) as (reader, writer):
        writer.write(request_head(world, length=len(body), extra=many) + body)
        await writer.drain()
        status, _ = await read_response(reader)
        assert 400 <= status < 500
        assert await closed_by_server(reader, within=SLACK_S) is not None
    assert len(world.mock.seen) == 1


# ── header_read_timeout_s ──────────────────────────────────────────────────────────────────
async def test_header_read_timeout_closes_connection_with_partial_head(
    make_world: MakeWorld,
) -> None:
    world = await make_world(header_read_timeout_s=LIMIT_S)
    async with raw_connection(world) as (reader, writer):
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        elapsed = await closed_by_server(reader, within=LIMIT_S + SLACK_S)
    assert elapsed is not None, "a partial request head held the connection open"
    assert elapsed >= LIMIT_S - 0.1
    assert world.mock.seen == []


async def test_header_read_timeout_closes_kept_alive_connection_with_partial_second_head(
    make_world: MakeWorld,
) -> None:
    world = await make_world(header_read_timeout_s=LIMIT_S)
    async with raw_connection(world) as (reader, writer):
        writer.write(HEALTH)
        status, _ = await read_response(reader)
        assert status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ")
        await writer.drain()
        elapsed = await closed_by_server(reader, within=LIMIT_S + SLACK_S)
    assert elapsed is not None, "a partial second request head held the connection open"


async def test_header_read_timeout_spares_idle_keep_alive_connection(
    make_world: MakeWorld,
) -> None:
    world = await make_world(header_read_timeout_s=LIMIT_S)
    async with raw_connection(world) as (reader, writer):
        writer.write(HEALTH)
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(LIMIT_S + 0.3)
        writer.write(HEALTH)
        assert (await read_response(reader))[0] == 200


async def test_header_read_timeout_spares_a_long_response(make_world: MakeWorld) -> None:
    world = await make_world(header_read_timeout_s=LIMIT_S)
    body = orjson.dumps({"model": "m-slow-stream", "messages": USER, "stream": True})
    async with raw_connection(world) as (reader, writer):
        writer.write(request_head(world, length=len(body)) + body)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        deadline = time.monotonic() + LIMIT_S + 0.3
        while time.monotonic() < deadline:
            assert await reader.read(65536), "the stream was cut by the head deadline"


# ── body_read_timeout_s ────────────────────────────────────────────────────────────────────
async def test_body_read_timeout_refuses_a_slow_body(make_world: MakeWorld) -> None:
    world = await make_world(body_read_timeout_s=LIMIT_S)
    async with raw_connection(world) as (reader, writer):
        start = time.monotonic()
        writer.write(request_head(world, length=100) + b'{"model": ')
        await writer.drain()
        async with asyncio.timeout(LIMIT_S + SLACK_S):
            status, raw = await read_response(reader)
        elapsed = time.monotonic() - start
    assert status == 408 and error_code(raw) == "request_timeout"
    assert elapsed >= LIMIT_S - 0.1
    assert world.mock.seen == []
    assert await denial_reasons(world) == [["request.read_timeout"]]


# ── keepalive_timeout_s ────────────────────────────────────────────────────────────────────
async def test_keepalive_timeout_closes_an_idle_connection(make_world: MakeWorld) -> None:
    world = await make_world(keepalive_timeout_s=LIMIT_S)
    async with raw_connection(world) as (reader, writer):
        writer.write(HEALTH)
        assert (await read_response(reader))[0] == 200
        elapsed = await closed_by_server(reader, within=LIMIT_S + SLACK_S)
    assert elapsed is not None
    assert elapsed >= LIMIT_S - 0.1


# ── upstream_connect_timeout_s ─────────────────────────────────────────────────────────────
async def test_upstream_refusing_connections_is_502_at_once(world: World) -> None:
    await add_model(world, "m-nowhere", free_port())
    start = time.monotonic()
    status, raw = await post(world, orjson.dumps({"model": "m-nowhere", "messages": USER}))
    assert status == 502 and error_code(raw) == "upstream_error"
    assert time.monotonic() - start < 1.0
    assert await outcomes(world) == ["upstream_error"]


async def test_upstream_connect_timeout_bounds_an_unanswered_connect(
    make_world: MakeWorld,
) -> None:
    world = await make_world(upstream_connect_timeout_s=LIMIT_S)
    with unanswering_listener() as port:
        await add_model(world, "m-blackhole", port)
        start = time.monotonic()
        status, raw = await post(world, orjson.dumps({"model": "m-blackhole", "messages": USER}))
        elapsed = time.monotonic() - start
    assert status == 504 and error_code(raw) == "upstream_timeout"
    assert LIMIT_S - 0.1 <= elapsed < LIMIT_S + SLACK_S
    assert await outcomes(world) == ["upstream_timeout"]


# ── upstream_read_timeout_s ────────────────────────────────────────────────────────────────
async def test_upstream_read_timeout_bounds_a_hung_upstream(make_world: MakeWorld) -> None:
    world = await make_world(upstream_read_timeout_s=LIMIT_S)
    start = time.monotonic()
    status, raw = await post(world, orjson.dumps({"model": "m-hang", "messages": USER}))
    elapsed = time.monotonic() - start
    assert status == 504 and error_code(raw) == "upstream_timeout"
    assert LIMIT_S - 0.1 <= elapsed < LIMIT_S + SLACK_S
    assert await outcomes(world) == ["upstream_timeout"]


# ── stream_max_seconds ─────────────────────────────────────────────────────────────────────
async def _cut_stream(world: World) -> tuple[str, bytes, float]:
    body = {"model": "m-slow-stream", "messages": USER, "stream": True}
    start = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + CHAT, json=body, headers=auth(world)) as resp,
    ):
        assert resp.status == 200
        raw = await resp.read()
        return resp.headers["x-request-id"], raw, time.monotonic() - start


async def test_stream_max_seconds_cuts_a_long_stream_with_an_error_event(
    make_world: MakeWorld,
) -> None:
    world = await make_world(stream_max_seconds=LIMIT_S)
    _, raw, elapsed = await _cut_stream(world)
    assert LIMIT_S - 0.1 <= elapsed < LIMIT_S + SLACK_S
    events = [block for block in raw.split(b"\n\n") if block.strip()]
    assert len(events) > 2  # chunks flowed before the cut
    last = events[-1]
    assert last.startswith(b"data: ")
    assert error_code(last.removeprefix(b"data: ")) == "upstream_timeout"
    assert await outcomes(world) == ["stream_limit"]


async def test_stream_max_seconds_cut_cancels_the_upstream_call(make_world: MakeWorld) -> None:
    world = await make_world(stream_max_seconds=LIMIT_S)
    request_id, _, _ = await _cut_stream(world)
    deadline = time.monotonic() + 1.0
    while request_id not in world.mock.cancelled_request_ids and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert request_id in world.mock.cancelled_request_ids, "the upstream kept generating"


# ── max_response_bytes ─────────────────────────────────────────────────────────────────────
async def test_max_response_bytes_refuses_a_larger_answer(make_world: MakeWorld) -> None:
    world = await make_world(max_response_bytes=256)
    status, raw = await post(world, chat_body())
    assert status == 502 and error_code(raw) == "upstream_error"
    assert len(world.mock.seen) == 1  # the upstream answered; the answer was refused
    assert await outcomes(world) == ["upstream_error"]


async def test_max_response_bytes_passes_a_smaller_answer_arriving_in_pieces(
    world: World,
) -> None:
    answer = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "remote",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "word " * 2000},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2000, "total_tokens": 2001},
        }
    )
    async with piecewise_upstream(answer) as port:
        await add_model(world, "m-pieces", port)
        status, raw = await post(world, orjson.dumps({"model": "m-pieces", "messages": USER}))
    assert status == 200, raw
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "word " * 2000
    assert await outcomes(world) == ["ok"]


# ── max_concurrent_requests ────────────────────────────────────────────────────────────────
async def test_max_concurrent_requests_refuses_the_next_call_with_503(
    make_world: MakeWorld,
) -> None:
    world = await make_world(max_concurrent_requests=2)
    hang = orjson.dumps({"model": "m-hang", "messages": USER})
    held = [asyncio.create_task(post(world, hang)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 2.0
        while len(world.mock.seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(world.mock.seen) == 2
        status, raw = await post(world, chat_body())
        assert status == 503 and error_code(raw) == "overloaded"
        assert len(world.mock.seen) == 2  # the refused call reached nothing
        assert await denial_reasons(world) == [["gateway.overloaded"]]
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
