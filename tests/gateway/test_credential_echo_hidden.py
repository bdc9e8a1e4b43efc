"""Attack: an upstream echoes its credential where the byte-form scrubber does not look.

1. In the ``Content-Type`` header of a plain answer: the gateway passed the upstream's
   header through verbatim (headers were never scrubbed).
2. Spelled with JSON ``\\u`` escapes (``"\\u006b\\u002f…"``) in an answer or a stream event:
   every JSON reader turns it back into the key, and no byte form matches it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support.admin import admin_call
from tests.support.callers import service_key
from tests.support.world import World

pytestmark = pytest.mark.e2e

KEYS = ["k/+=9Q", "sk-proj-AbCdEf0123456789/+=ghIJkl"]


def escaped(key: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in key)


def presented(request: web.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


async def handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    key = presented(request)
    # Half escaped, half plain: neither the raw key nor a fully escaped one.
    half = escaped(key[:3]) + key[3:]
    if body.get("stream"):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for text in (escaped(key), half):
            event = '{"object":"chat.completion.chunk","choices":[{"delta":{"content":"%s"}}]}'
            await resp.write(b"data: " + (event % text).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp
    answer = (
        '{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
        f'"content":"{escaped(key)} and {half}"}}}}],'
        '"usage":{"prompt_tokens":1,"completion_tokens":2}}'
    )
    return web.Response(
        body=answer.encode(),
        headers={"content-type": f"application/json; charset=utf-8; debug={key}"},
    )


@contextlib.asynccontextmanager
async def hostile_upstream() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def decoded_texts(raw: bytes) -> str:
    """What a client reads: every JSON value decoded (one answer or SSE data lines)."""
    if raw.startswith(b"{"):
        return orjson.dumps(orjson.loads(raw)).decode()
    out = []
    for line in raw.splitlines():
        if line.startswith(b"data: {"):
            out.append(orjson.dumps(orjson.loads(line[6:])).decode())
    return "\n".join(out)


@pytest.mark.parametrize("key", KEYS, ids=["short", "long"])
async def test_an_echo_in_a_header_or_in_json_escapes_never_reaches_the_caller(
    world: World, key: str
) -> None:
    async with hostile_upstream() as port:
        status, model = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/models",
            {
                "name": "echo-escaped",
                "upstream_url": f"http://127.0.0.1:{port}/v1",
                "upstream_model": "echo",
                "api": "openai",
                "upstream_key": key,
            },
        )
        assert status == 201, model
        await world.reload()
        caller = await service_key(world)
        for stream in (False, True):
            body = {
                "model": "echo-escaped",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": stream,
            }
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    world.base + "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {caller}"},
                ) as resp,
            ):
                assert resp.status == 200
                raw = await resp.read()
                headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
            assert key not in headers
            assert key not in raw.decode()
            assert key[3:] not in decoded_texts(raw), stream
