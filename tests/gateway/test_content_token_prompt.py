"""Attack: give the content rules nothing to read by sending a completions prompt as token ids.

``/v1/completions`` takes ``prompt`` as text or as token ids (``[[15339, 682, ...]]``).
The model reads the ids as the text they encode; the content rules read only strings, so a
prompt encoded as ids went through unscanned and unflagged. With content rules loaded, such
a prompt is refused like any body that cannot be checked whole (400 in the API's shape,
never forwarded).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.world import World

pytestmark = pytest.mark.e2e


async def post(world: World, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/completions",
            json=body,
            headers={"authorization": f"Bearer {world.keys['carol']}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    "prompt", [[40, 1142, 682, 3766], [[40, 1142], [682, 3766]], ["text", [40, 1142]]]
)
async def test_a_prompt_of_token_ids_is_refused_not_forwarded_unread(
    world: World, prompt: Any
) -> None:
    status, answer = await post(world, {"model": "assistant", "prompt": prompt, "max_tokens": 4})
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert "token ids" in answer["error"]["message"]
    await world.settle()
    assert world.events("request.allowed") == []
    assert world.mock.seen == []


async def test_a_text_prompt_still_goes_through(world: World) -> None:
    status, answer = await post(
        world, {"model": "assistant", "prompt": ["a", "b"], "max_tokens": 4}
    )
    assert status == 200, answer
