"""Upstream cookies are never kept: one caller's Set-Cookie must not ride on another's call."""

from __future__ import annotations

import time

import aiohttp

from garrison.domain import AuthStyle, Level, UpstreamApi
from tests.support.world import UPSTREAM_KEY, World


async def test_upstream_set_cookie_is_not_sent_back_on_the_next_call(world: World) -> None:
    port = world.mock.port
    # A host name, not an IP: aiohttp's default jar would keep cookies for it.
    world.directory.create_model(
        "by-name",
        upstream_url=f"http://localhost:{port}/v1",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        upstream_key=UPSTREAM_KEY,
        now=time.time(),
    )
    await world.reload()
    body = {"model": "by-name", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        for who in ("alice", "carol"):
            headers = {"authorization": f"Bearer {world.keys[who]}"}
            async with session.post(
                f"{world.base}/v1/chat/completions", json=body, headers=headers
            ) as resp:
                assert resp.status == 200
                assert "set-cookie" not in resp.headers
    assert len(world.mock.seen) == 2
    assert "cookie" not in world.mock.seen[1].headers
