"""JSON nested deeper than ``MAX_JSON_DEPTH`` is a 400 at parse time, recorded, forwarded
nowhere (it once passed every check and then failed as a 500 with no record)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from garrison.errors import BadRequest
from garrison.gateway.apis import CHAT, parse_body
from garrison.gateway.json_depth import MAX_JSON_DEPTH, within_depth
from tests.gateway.test_refusals import (
    ANTHROPIC_VERSION,
    MESSAGES,
    USER,
    anthropic_error,
    assert_denied,
    call,
    openai_error,
)
from tests.support.world import World

pytestmark = pytest.mark.e2e


def nested(levels: int) -> Any:
    """A value that nests ``levels`` levels (lists and objects alternating)."""
    value: Any = 0
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def body_of_depth(depth: int, **fields: Any) -> dict[str, Any]:
    """A chat body nesting exactly ``depth`` levels (the body itself is level 1)."""
    return {"model": "assistant", "messages": USER, **fields, "x": nested(depth - 1)}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300], ids=["over-the-cap", "over-encoder"])
async def test_a_body_nested_too_deep_is_400_recorded_and_not_forwarded(
    world: World, depth: int
) -> None:
    # Built as bytes: orjson itself will not encode past 254 levels.
    opened = b'{"k":[' * ((depth - 1) // 2) + (b'{"k":' if depth % 2 == 0 else b"")
    closed = (b"}" if depth % 2 == 0 else b"") + b"]}" * ((depth - 1) // 2)
    raw = b'{"model":"assistant","messages":%b,"x":%b0%b}' % (orjson.dumps(USER), opened, closed)
    assert not within_depth(orjson.loads(raw), depth - 1) and within_depth(orjson.loads(raw), depth)
    reply = await call(world, "/v1/chat/completions", key=world.keys["alice"], data=raw)
    error = openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert str(MAX_JSON_DEPTH) in error["message"]
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_a_body_nested_too_deep_on_messages_is_400_in_anthropic_shape(world: World) -> None:
    body = {"model": "claude", "max_tokens": 8, "messages": USER, "x": nested(MAX_JSON_DEPTH)}
    headers = {"x-api-key": world.keys["alice"], "anthropic-version": ANTHROPIC_VERSION}
    reply = await call(world, MESSAGES, data=orjson.dumps(body), headers=headers)
    anthropic_error(reply, 400, type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


def test_a_body_at_the_cap_parses() -> None:
    body = body_of_depth(MAX_JSON_DEPTH)
    assert within_depth(body) and not within_depth(body, MAX_JSON_DEPTH - 1)
    assert parse_body(CHAT, orjson.dumps(body)) == body


def test_a_body_one_level_over_the_cap_is_refused() -> None:
    with pytest.raises(BadRequest, match="nested too deep"):
        parse_body(CHAT, orjson.dumps(body_of_depth(MAX_JSON_DEPTH + 1)))


def test_depth_is_measured_without_recursion() -> None:
    deep = orjson.loads(b"[" * 1000 + b"]" * 1000)  # deeper than Python's recursion limit
    assert not within_depth(deep)
    assert within_depth(deep, 1000) and not within_depth(deep, 999)
    assert within_depth("scalar", 0)
