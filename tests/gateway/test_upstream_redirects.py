"""A hostile upstream answers with a redirect: the gateway never follows it.

A 307/308 would resend the sealed credential and the prompt to the target; a 302 would turn
into a GET of a URL the upstream chose (an internal one) whose answer reaches the caller.
The target here is a second loopback server that records every request it gets: it must get
none. The caller gets a 502 in its API's shape; the audit record names the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from garrison.domain import Reason
from garrison.gateway.upstream import is_redirect
from tests.support.admin import admin_call
from tests.support.callers import service_key
from tests.support.shapes import ANTHROPIC_ERROR_TYPES
from tests.support.world import World

pytestmark = pytest.mark.e2e

SECRET = "sk-redirect-upstream-key-0123456789"
USER = [{"role": "user", "content": "the prompt that must not travel"}]


class Recorder:
    """A loopback server that answers every method and path, and records each request."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits.append((request.method, request.path, dict(request.headers), body))
        return web.json_response({"internal": "secret metadata of the internal service"})


@contextlib.asynccontextmanager
async def serve(handler: Any) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def redirecting_upstream(status: int) -> AsyncIterator[tuple[int, Recorder]]:
    """An upstream answering ``status`` with a Location on a recording target."""
    target = Recorder()
    async with serve(target.handle) as target_port:

        async def redirect(request: web.Request) -> web.Response:
            await request.read()
            location = f"http://127.0.0.1:{target_port}{request.path}"
            return web.Response(status=status, headers={"Location": location})

        async with serve(redirect) as port:
            yield port, target


async def register(world: World, name: str, port: int, api: str) -> None:
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/models",
        {
            "name": name,
            "upstream_url": f"http://127.0.0.1:{port}/v1",
            "api": api,
            "upstream_key": SECRET,
            "level": "internal",
        },
    )
    assert status == 201, body
    await world.reload()


async def call(world: World, key: str, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    headers = (
        {"x-api-key": key, "anthropic-version": "2023-06-01"}
        if path == "/v1/messages"
        else {"authorization": f"Bearer {key}"}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + path, json=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("x-request-id", ""), await resp.read()


async def completed(world: World, request_id: str) -> dict[str, Any]:
    await world.settle()
    events = [e for e in world.events("request.completed") if e["request_id"] == request_id]
    assert len(events) == 1, events
    return events[0]


CASES = [
    ("openai", "/v1/chat/completions", {"messages": USER}),
    ("openai", "/v1/chat/completions", {"messages": USER, "stream": True}),
    ("openai", "/v1/embeddings", {"input": "x"}),
    ("anthropic", "/v1/messages", {"messages": USER, "max_tokens": 8}),
    ("anthropic", "/v1/messages", {"messages": USER, "max_tokens": 8, "stream": True}),
]


@pytest.mark.parametrize("redirect", [302, 307])
@pytest.mark.parametrize(
    ("api", "path", "body"),
    CASES,
    ids=["chat", "chat-stream", "embeddings", "messages", "messages-stream"],
)
async def test_upstream_redirect_is_a_502_and_its_target_is_never_contacted(
    world: World, redirect: int, api: str, path: str, body: dict[str, Any]
) -> None:
    async with redirecting_upstream(redirect) as (port, target):
        await register(world, "redirector", port, api)
        key = await service_key(world)
        status, request_id, raw = await call(world, key, path, {"model": "redirector", **body})
        assert status == 502
        assert target.hits == []
        text = raw.decode()
        assert SECRET not in text and "internal service" not in text and "127.0.0.1" not in text
        doc = orjson.loads(raw)
        if api == "anthropic":
            assert doc["type"] == "error" and doc["error"]["type"] in ANTHROPIC_ERROR_TYPES
        else:
            assert set(doc["error"]) == {"message", "type", "param", "code"}
        record = await completed(world, request_id)
    assert record["data"]["outcome"] == "upstream_redirect"
    assert record["data"]["status"] == 502
    assert record["data"]["upstream_status"] == redirect
    assert record["data"]["reasons"] == [Reason.UPSTREAM_REDIRECT.value]


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 305, 307, 308, 399])
def test_every_3xx_counts_as_a_redirect(status: int) -> None:
    assert is_redirect(status)


@pytest.mark.parametrize("status", [200, 201, 299, 400, 502])
def test_other_statuses_are_not_redirects(status: int) -> None:
    assert not is_redirect(status)
