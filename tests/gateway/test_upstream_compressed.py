"""Attack: an upstream compresses its answer so the credential scrub cannot see into it.

The gateway asks for ``Accept-Encoding: identity`` and does not decompress (its upstream
session has ``auto_decompress=False``), so a gzip answer passed through as opaque bytes:
the key echoed inside was never scrubbed, error events never replaced, usage never metered,
and a caller who gunzips the bytes reads the key. A compressed answer is now a 502.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.admin import admin_call
from tests.support.callers import service_key
from tests.support.world import World

pytestmark = pytest.mark.e2e

KEY = "sk-upstream-Zm9vYmFy0123456789"


async def handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    if body.get("stream"):
        event = '{"object":"chat.completion.chunk","choices":[{"delta":{"content":"%s"}}]}'
        raw = b"data: " + (event % key).encode() + b"\n\ndata: [DONE]\n\n"
        content_type = "text/event-stream"
    else:
        raw = (
            '{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
            f'"content":"{key}"}}}}],"usage":{{"prompt_tokens":1,"completion_tokens":1}}}}'
        ).encode()
        content_type = "application/json"
    return web.Response(
        body=gzip.compress(raw),
        headers={"content-type": content_type, "content-encoding": "gzip"},
    )


@contextlib.asynccontextmanager
async def gzip_upstream() -> AsyncIterator[int]:
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


async def test_a_compressed_answer_is_refused_and_never_carries_the_key(world: World) -> None:
    async with gzip_upstream() as port:
        status, model = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/models",
            {
                "name": "gzipper",
                "upstream_url": f"http://127.0.0.1:{port}/v1",
                "upstream_model": "gz",
                "api": "openai",
                "upstream_key": KEY,
            },
        )
        assert status == 201, model
        await world.reload()
        caller = await service_key(world)
        for stream in (False, True):
            body: dict[str, Any] = {
                "model": "gzipper",
                "messages": [{"role": "user", "content": "hi"}],
            }
            body["stream"] = stream
            async with (
                aiohttp.ClientSession(auto_decompress=False) as session,
                session.post(
                    world.base + "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {caller}"},
                ) as resp,
            ):
                raw = await resp.read()
                status = resp.status
            with contextlib.suppress(OSError, EOFError):
                raw = gzip.decompress(raw)
            assert KEY.encode() not in raw, stream
            assert status == 502, (stream, raw[:200])
