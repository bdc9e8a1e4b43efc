"""A stream reaches the client as the upstream would have sent it without the gateway."""

from __future__ import annotations

import aiohttp

from tests.support.world import World

BODY = {"model": "assistant", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _raw_stream(world: World, body: dict[str, object]) -> bytes:
    headers = {"authorization": f"Bearer {world.keys['alice']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{world.base}/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


async def test_usage_requested_on_the_clients_behalf_leaves_no_trace(world: World) -> None:
    raw = await _raw_stream(world, BODY)
    assert b'"usage"' not in raw  # neither the usage chunk nor "usage": null fields
    assert raw.endswith(b"data: [DONE]\n\n")
    # ...yet the upstream was asked for usage, and the audit record has the real counts.
    assert b'"include_usage":true' in world.mock.seen[-1].body
    await world.settle()
    assert world.events("request.completed")[-1]["data"]["tokens_out"] == 16


async def test_client_that_asked_for_usage_gets_it_unchanged(world: World) -> None:
    raw = await _raw_stream(world, {**BODY, "stream_options": {"include_usage": True}})
    assert raw.count(b'"usage":null') >= 16
    assert b'"completion_tokens":16' in raw
