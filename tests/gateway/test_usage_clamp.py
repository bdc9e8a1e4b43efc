"""A hostile upstream reports negative or absurd usage: the count is clamped into
[0, MAX_REPORTED_TOKENS] and the call's record is flagged, so quotas and volume detectors
cannot be pushed backwards (or flooded) by a forged count."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from garrison.domain import Reason, UpstreamApi
from garrison.gateway.metering import MAX_REPORTED_TOKENS, SseMeter, usage_from_body
from tests.support.admin import admin_call
from tests.support.callers import service_key
from tests.support.servers import one_route_upstream
from tests.support.world import World

OPENAI, ANTHROPIC = UpstreamApi.OPENAI, UpstreamApi.ANTHROPIC


def openai_usage(prompt: Any, completion: Any) -> dict[str, Any]:
    return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def test_negative_usage_is_clamped_to_zero_and_flagged() -> None:
    usage = usage_from_body(OPENAI, openai_usage(-1_000_000, -5))
    assert (usage.tokens_in, usage.tokens_out) == (0, 0)
    assert usage.flags == {"tokens_in.negative", "tokens_out.negative"}


def test_absurd_usage_is_clamped_to_the_limit_and_flagged() -> None:
    usage = usage_from_body(ANTHROPIC, {"usage": {"input_tokens": 10**30, "output_tokens": 3}})
    assert (usage.tokens_in, usage.tokens_out) == (MAX_REPORTED_TOKENS, 3)
    assert usage.flags == {"tokens_in.too_large"}


def test_usage_at_the_limit_is_kept_unflagged() -> None:
    usage = usage_from_body(OPENAI, openai_usage(MAX_REPORTED_TOKENS, 0))
    assert (usage.tokens_in, usage.flags) == (MAX_REPORTED_TOKENS, set())


def test_usage_one_past_the_limit_is_flagged() -> None:
    usage = usage_from_body(OPENAI, openai_usage(MAX_REPORTED_TOKENS + 1, 0))
    assert usage.flags == {"tokens_in.too_large"}


def test_float_usage_is_ignored_and_flagged() -> None:
    usage = usage_from_body(OPENAI, openai_usage(1.5, 1e30))
    assert (usage.tokens_in, usage.tokens_out) == (None, None)
    assert usage.flags == {"tokens_in.not_integer", "tokens_out.not_integer"}


def test_ordinary_usage_is_not_flagged() -> None:
    usage = usage_from_body(OPENAI, openai_usage(12, 34))
    assert (usage.tokens_in, usage.tokens_out, usage.flags) == (12, 34, set())


def test_negative_usage_in_an_openai_stream_is_clamped() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=False)
    chunk = {"choices": [], **openai_usage(-7, -9)}
    meter.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert (meter.usage.tokens_in, meter.usage.output_tokens) == (0, 0)
    assert meter.usage.flags == {"tokens_in.negative", "tokens_out.negative"}


def test_negative_usage_in_an_anthropic_stream_is_clamped() -> None:
    meter = SseMeter(ANTHROPIC, drop_usage_chunk=False)
    delta = {"type": "message_delta", "usage": {"output_tokens": -100}}
    meter.feed(b"event: message_delta\ndata: " + orjson.dumps(delta) + b"\n\n")
    assert (meter.usage.tokens_out, meter.usage.flags) == (0, {"tokens_out.negative"})


@pytest.mark.e2e
async def test_negative_usage_is_recorded_clamped_and_flagged(world: World) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                **openai_usage(-1_000_000, 10**12),
            }
        )

    async with one_route_upstream("/v1/chat/completions", answer) as port:
        status, body = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/models",
            {"name": "forger", "upstream_url": f"http://127.0.0.1:{port}/v1"},
        )
        assert status == 201, body
        await world.reload()
        caller = await service_key(world)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                world.base + "/v1/chat/completions",
                json={"model": "forger", "messages": [{"role": "user", "content": "x"}]},
                headers={"authorization": f"Bearer {caller}"},
            ) as resp,
        ):
            assert resp.status == 200
            request_id = resp.headers["x-request-id"]
        await world.settle()
    [record] = [e for e in world.events("request.completed") if e["request_id"] == request_id]
    data = record["data"]
    assert (data["tokens_in"], data["tokens_out"]) == (0, MAX_REPORTED_TOKENS)
    assert data["usage_flags"] == ["tokens_in.negative", "tokens_out.too_large"]
    assert data["reasons"] == [Reason.UPSTREAM_USAGE_INVALID.value]
