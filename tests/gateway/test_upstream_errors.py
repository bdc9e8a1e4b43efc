"""Tests for ``garrison.gateway.upstream_errors``: only known message shapes reach a caller,
rebuilt as the gateway's own sentence with the upstream's numbers in it."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web

from garrison.domain import UpstreamApi
from garrison.gateway.upstream_errors import (
    MAX_MESSAGE_SCAN_CHARS,
    SAFE_CODES,
    UpstreamErrorText,
    client_message,
    read_error,
    rewrite_stream_errors,
    safe_message,
)
from tests.support.admin import admin_call
from tests.support.callers import service_key
from tests.support.servers import one_route_upstream
from tests.support.world import World

LEAK = " (host gpu-7.corp, org org-SECRET, key sk-abc/+=, trace /srv/app.py:12)"


def message(text: str, code: str = "", type_: str = "") -> tuple[str, str]:
    return safe_message(UpstreamErrorText(text, code, type_))


KNOWN = [
    (
        "This model's maximum context length is 4096 tokens. However, you requested 5000 "
        "tokens (4000 in the messages, 1000 in the completion). Please reduce the length of "
        "the messages or completion.",
        "This model's maximum context length is 4096 tokens. However, you requested 5000 "
        "tokens. Please reduce the length of the messages or completion.",
    ),
    (
        "This model's maximum context length is 8192 tokens",
        "This model's maximum context length is 8192 tokens. Please reduce the length of the "
        "messages or completion.",
    ),
    (
        "prompt is too long: 210000 tokens > 200000 maximum",
        "prompt is too long: 210000 tokens > 200000 maximum",
    ),
    (
        "prompt is too long: maximum context length is 4096 tokens",
        "prompt is too long: maximum context length is 4096 tokens",
    ),
    (
        "max_tokens: 9000 > 8192, which is the maximum allowed number of output tokens for "
        "claude-x",
        "max_tokens: 9000 > 8192, which is the maximum allowed number of output tokens for "
        "this model",
    ),
    (
        "'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum "
        "context length is 4096 tokens and your request has 10 input tokens (5000 > 4096 - 10).",
        "max_tokens is too large: 5000. This model's maximum context length is 4096 tokens "
        "and your request has 10 input tokens.",
    ),
    (
        "request (5000 tokens) exceeds the available context size (4096 tokens), try increasing it",
        "The request (5000 tokens) exceeds the available context size (4096 tokens).",
    ),
    (
        "the request exceeds the available context size, try increasing it",
        "The request exceeds the available context size.",
    ),
]


@pytest.mark.parametrize(("upstream", "shown"), KNOWN, ids=range(len(KNOWN)))
def test_known_shape_is_rebuilt_as_the_gateways_sentence(upstream: str, shown: str) -> None:
    assert message(upstream)[0] == shown


@pytest.mark.parametrize(("upstream", "shown"), KNOWN, ids=range(len(KNOWN)))
def test_leaky_details_around_a_known_shape_are_dropped(upstream: str, shown: str) -> None:
    out = message("Error at gpu-7.corp: " + upstream + LEAK)[0]
    assert out == shown


@pytest.mark.parametrize(
    "upstream",
    [
        "Incorrect API key provided: sk-abc***xyz",
        "temperature must be between 0 and 2",
        "upstream http://10.0.0.7:8000 refused" + LEAK,
        "Zm9v/YmFy+cXV4==",
        "",
    ],
)
def test_any_other_message_becomes_generic(upstream: str) -> None:
    assert message(upstream) == ("", "generic")


@pytest.mark.parametrize("code", sorted(SAFE_CODES))
def test_known_code_gets_its_fixed_sentence(code: str) -> None:
    assert message("whatever the upstream said" + LEAK, code=code) == (SAFE_CODES[code], code)


def test_known_type_gets_its_fixed_sentence() -> None:
    assert message("x", type_="content_filter")[0] == SAFE_CODES["content_filter"]


def test_a_number_longer_than_nine_digits_is_not_quoted() -> None:
    out = message("maximum context length is 1234567890123 tokens")[0]
    assert "1234567890123" not in out


def test_leading_zeros_are_not_passed() -> None:
    assert "0004096" not in message("maximum context length is 0004096 tokens")[0]


def test_shape_past_the_scan_limit_is_not_found() -> None:
    text = "x" * MAX_MESSAGE_SCAN_CHARS + "maximum context length is 4096 tokens"
    assert message(text) == ("", "generic")


def test_shape_inside_the_scan_limit_is_found() -> None:
    text = "x " * (MAX_MESSAGE_SCAN_CHARS // 2 - 40) + "maximum context length is 4096 tokens"
    assert message(text)[1] == "openai_context"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"error": {"message": "m", "code": "c", "type": "t"}}',
            UpstreamErrorText("m", "c", "t"),
        ),
        (
            b'{"type": "error", "error": {"type": "t", "message": "m"}}',
            UpstreamErrorText("m", "", "t"),
        ),
        (b'{"error": {"message": "m", "code": 400}}', UpstreamErrorText("m")),
        (b'{"error": "m"}', UpstreamErrorText("m")),
        (b'{"detail": "m"}', UpstreamErrorText("m")),
        (b"<html>bad gateway</html>", UpstreamErrorText()),
        (b"[1]", UpstreamErrorText()),
    ],
)
def test_error_bodies_are_read(raw: bytes, expected: UpstreamErrorText) -> None:
    assert read_error(raw) == expected


def test_client_message_replaces_the_upstream_model_name_and_the_key() -> None:
    raw = orjson.dumps({"error": {"message": "maximum context length is 4096 tokens"}})
    out, shape = client_message(
        raw, upstream_model="internal-x", model_name="assistant", key="4096"
    )
    assert (out.count("4096"), shape) == (0, "openai_context")


# ── error events inside a stream ───────────────────────────────────────────────────────────
LEAKY = {"message": "CUDA OOM on gpu-7.corp, key Zm9v/YmFy+cXV4==", "type": "server_error"}


def rewrite(out: bytes, api: UpstreamApi = UpstreamApi.OPENAI) -> bytes:
    return rewrite_stream_errors(
        out, api, upstream_model="internal-x", model_name="assistant", key="Zm9v/YmFy+cXV4=="
    )


@pytest.mark.parametrize(
    "event",
    [
        b"data: " + orjson.dumps({"error": LEAKY}),
        b"data: " + orjson.dumps({"object": "error", **LEAKY, "code": 500}),
        b"event: error\ndata: " + orjson.dumps({"type": "error", "error": LEAKY}),
        b"data: " + orjson.dumps({"error": LEAKY["message"]}),
    ],
    ids=["openai", "vllm", "anthropic", "string"],
)
def test_an_upstream_error_event_is_replaced_by_the_gateways_own(event: bytes) -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n' + event + b"\n\n"
    out = rewrite(chunk)
    assert out.startswith(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
    assert b"gpu-7" not in out and b"CUDA" not in out and b"Zm9v" not in out
    assert b"The model server failed to answer." in out and out.endswith(b"\n\n")


def test_a_known_shape_inside_a_stream_error_is_rebuilt() -> None:
    error = {"error": {"message": "maximum context length is 4096 tokens (host gpu-7.corp)"}}
    out = rewrite(b"data: " + orjson.dumps(error) + b"\n\n")
    assert b"maximum context length is 4096 tokens" in out and b"gpu-7" not in out


def test_an_anthropic_stream_error_keeps_the_anthropic_shape() -> None:
    event = b"event: error\ndata: " + orjson.dumps({"type": "error", "error": LEAKY})
    out = rewrite(event + b"\r\n\r\n", UpstreamApi.ANTHROPIC)
    name, _, data = out.strip().partition(b"\ndata: ")
    assert name == b"event: error"
    assert orjson.loads(data)["type"] == "error"


@pytest.mark.parametrize(
    "chunk",
    [
        b'data: {"choices":[{"delta":{"content":"error"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"an \\"error\\": here"}}]}\n\n',
        b"data: [DONE]\n\n",
        b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n',
    ],
)
def test_ordinary_events_pass_unchanged(chunk: bytes) -> None:
    assert rewrite(chunk) == chunk


@pytest.mark.e2e
async def test_a_leaky_error_event_mid_stream_never_reaches_the_caller(world: World) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"delta":{"content":"partial"}}]}\n\n')
        await resp.write(b"data: " + orjson.dumps({"error": LEAKY}))  # no closing blank line
        return resp

    async with one_route_upstream("/v1/chat/completions", stream) as port:
        status, body = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/models",
            {"name": "leaky", "upstream_url": f"http://127.0.0.1:{port}/v1"},
        )
        assert status == 201, body
        await world.reload()
        caller = await service_key(world)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                world.base + "/v1/chat/completions",
                json={
                    "model": "leaky",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                },
                headers={"authorization": f"Bearer {caller}"},
            ) as resp,
        ):
            raw = await resp.read()
    assert b"partial" in raw
    assert b"gpu-7" not in raw and b"CUDA" not in raw and b"Zm9v" not in raw
    assert b"The model server failed to answer." in raw
