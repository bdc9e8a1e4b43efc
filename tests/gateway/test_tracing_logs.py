"""W3C traceparent passes through to the upstream and into the audit record; JSON logs carry
each call's request id."""

from __future__ import annotations

import io
import logging

import aiohttp
import orjson
import pytest

from garrison.log_format import JsonFormatter
from tests.support.world import World

pytestmark = pytest.mark.e2e

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _chat(world: World, model: str, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {world.keys['alice']}", **headers},
        ) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers["x-request-id"]


async def test_a_valid_traceparent_reaches_the_upstream_and_the_record(world: World) -> None:
    status, request_id = await _chat(world, "assistant", {"traceparent": TRACE})
    assert status == 200
    assert world.mock.seen[-1].headers.get("traceparent") == TRACE
    await world.settle()
    (allowed,) = [e for e in world.events("request.allowed") if e["request_id"] == request_id]
    assert allowed["data"]["traceparent"] == TRACE


@pytest.mark.parametrize(
    "bad",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx-api-key: stolen",
        "x" * 300,
    ],
    ids=["zero", "version", "injection", "long"],
)
async def test_an_invalid_traceparent_is_dropped_not_refused(world: World, bad: str) -> None:
    try:
        status, request_id = await _chat(world, "assistant", {"traceparent": bad})
    except ValueError:  # the client itself refuses a header with CR/LF
        return
    assert status == 200
    assert "traceparent" not in world.mock.seen[-1].headers
    await world.settle()
    (allowed,) = [e for e in world.events("request.allowed") if e["request_id"] == request_id]
    assert "traceparent" not in allowed["data"]


async def test_json_logs_carry_the_request_id_of_the_call(world: World) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("garrison.gateway")
    logger.addHandler(handler)
    try:
        status, request_id = await _chat(world, "m-drop", {})
    finally:
        logger.removeHandler(handler)
    assert status == 502
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert mine, lines
    assert set(mine[0]) <= {"ts", "level", "logger", "message", "request_id", "exception"}
    assert mine[0]["ts"].endswith("Z") and mine[0]["level"] == "warning"
