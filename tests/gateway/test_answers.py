"""Non-streamed answers: a process budget of buffered answer bytes, an overall deadline
against a dripping upstream, and usage read from a large answer without parsing it whole."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from unittest import mock

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from garrison.gateway import answers
from tests.gateway.test_limits import (
    LIMIT_S,
    SLACK_S,
    USER,
    MakeWorld,
    add_model,
    error_code,
    make_world,
    outcomes,
    post,
)
from tests.support.servers import one_route_upstream
from tests.support.world import World

pytestmark = pytest.mark.e2e

__all__ = ["make_world"]

MIB = 1024 * 1024
CALLS = 20


def big_answer(size: int) -> bytes:
    """A chat completion of exactly ``size`` bytes, its usage last."""
    doc = {
        "id": "chatcmpl-big",
        "object": "chat.completion",
        "created": 0,
        "model": "remote",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18},
    }
    pad = size - len(orjson.dumps(doc))
    doc["choices"][0]["message"]["content"] = "w" * pad  # type: ignore[index]
    raw = orjson.dumps(doc)
    assert len(raw) == size
    return raw


@contextlib.asynccontextmanager
async def big_upstream(answer: bytes, *, declare: bool, together: int) -> AsyncIterator[int]:
    """Answers ``answer`` once ``together`` calls have arrived (or after 3 s), in pieces; with
    ``declare`` its length is sent first, otherwise it is chunked."""
    arrived = 0
    all_here = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        await request.read()
        arrived += 1
        if arrived >= together:
            all_here.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await all_here.wait()
        response = web.StreamResponse(headers={"content-type": "application/json"})
        if declare:
            response.content_length = len(answer)
        await response.prepare(request)
        step = 256 * 1024
        for offset in range(0, len(answer), step):
            await response.write(answer[offset : offset + step])
            await asyncio.sleep(0.005)
        await response.write_eof()
        return response

    async with one_route_upstream("/v1/chat/completions", handle) as port:
        yield port


@contextlib.asynccontextmanager
async def dripping_upstream() -> AsyncIterator[int]:
    """Declares a 1 MB answer and sends one byte every 50 ms (under any read timeout)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = 1_000_000
        await response.prepare(request)
        for _ in range(1_000_000):
            await response.write(b" ")
            await asyncio.sleep(0.05)
        return response

    async with one_route_upstream("/v1/chat/completions", handle) as port:
        yield port


async def call(world: World, model: str) -> tuple[int, bytes]:
    return await post(world, orjson.dumps({"model": model, "messages": USER}))


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
async def test_buffered_answer_budget_holds_with_many_large_answers(
    make_world: MakeWorld, declare: bool
) -> None:
    budget = 4 * MIB
    world = await make_world(max_buffered_response_bytes=budget)
    answer = big_answer(MIB)
    async with big_upstream(answer, declare=declare, together=CALLS) as port:
        await add_model(world, "m-big", port)
        results = await asyncio.gather(*(call(world, "m-big") for _ in range(CALLS)))
    answers = world.gateway.state.answers
    assert answers.peak <= budget
    assert answers.held == 0
    ok = [raw for status, raw in results if status == 200]
    refused = [raw for status, raw in results if status != 200]
    assert 1 <= len(ok) <= 4
    assert len(ok) + len(refused) == CALLS
    for raw in ok:
        assert orjson.loads(raw)["model"] == "m-big"
    for status, raw in results:
        if status != 200:
            assert status == 503 and error_code(raw) == "overloaded"
    recorded = await outcomes(world)
    assert recorded.count("response_budget") == len(refused)
    assert recorded.count("ok") == len(ok)


async def test_nonstream_deadline_cuts_a_dripping_upstream(make_world: MakeWorld) -> None:
    world = await make_world(nonstream_max_seconds=LIMIT_S)
    async with dripping_upstream() as port:
        await add_model(world, "m-drip", port)
        start = time.monotonic()
        status, raw = await call(world, "m-drip")
        elapsed = time.monotonic() - start
    assert status == 504 and error_code(raw) == "upstream_timeout"
    assert LIMIT_S - 0.1 <= elapsed < LIMIT_S + SLACK_S
    assert await outcomes(world) == ["call_deadline"]
    assert world.gateway.state.answers.held == 0


async def test_large_answer_usage_is_read_from_its_tail(make_world: MakeWorld) -> None:
    world = await make_world()
    answer = big_answer(3 * MIB)
    async with big_upstream(answer, declare=True, together=1) as port:
        await add_model(world, "m-large", port)
        status, raw = await call(world, "m-large")
    assert status == 200
    assert len(raw) == len(answer) - len(b'"remote"') + len(b'"m-large"')
    assert orjson.loads(raw)["usage"]["completion_tokens"] == 11
    await world.settle()
    (done,) = world.events("request.completed")
    assert (done["data"]["tokens_in"], done["data"]["tokens_out"]) == (7, 11)


class _Collect:
    def __init__(self) -> None:
        self.out = bytearray()
        self.writes: list[int] = []

    async def write(self, data: bytes | memoryview) -> None:
        self.out += data
        self.writes.append(len(data))


@given(
    raw=st.binary(max_size=300),
    old=st.sampled_from([b'"remote"', b'"m"', b'"x"']),
    new=st.sampled_from([b'"m-big"', b'"y"', b'"remote"']),
    step=st.integers(min_value=1, max_value=16) | st.integers(min_value=200, max_value=2000),
)
def test_write_renamed_equals_bytes_replace(raw: bytes, old: bytes, new: bytes, step: int) -> None:
    raw = raw.replace(b"\x00", old)  # plant some occurrences
    sink = _Collect()
    renamed = len(raw.replace(old, new))
    with mock.patch.object(answers, "WRITE_BYTES", step):
        asyncio.run(answers.write_renamed(sink, bytearray(raw), old, new))  # type: ignore[arg-type]
        whole = answers.renamed_whole(bytearray(raw), old, new, renamed)
    assert bytes(sink.out) == raw.replace(old, new)
    if renamed <= step and len(raw) <= step:
        assert whole is not None and bytes(whole) == raw.replace(old, new)  # sent whole
    else:
        assert whole is None
    # Never one write much over WRITE_BYTES, however much the renaming grows the answer.
    assert all(size <= 2 * step + len(new) for size in sink.writes)
    assert answers.renamed_length(bytearray(raw), old, new) == renamed
