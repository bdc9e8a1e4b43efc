"""One byte stops nobody: header text that enters an audit event is checked before use.

A byte that is not UTF-8 in ``x-garrison-justification`` (aiohttp decodes it with
``surrogateescape``) once made the whole group-commit batch fail to encode: every other
caller got 503 while the flood lasted, and with ``fail_open`` the poisoned call was forwarded
unrecorded. Now such a header is a 400 in the API's shape, before the model is looked up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from garrison.errors import BadRequest
from garrison.gateway import app as gateway_app
from garrison.gateway.caller_text import (
    JUSTIFICATION_HEADER,
    JUSTIFICATION_MAX_CHARS,
    caller_justification,
)
from garrison.server import Gateway
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
# Calls the well-behaved caller makes while the poisoner floods.
GOOD_CALLS = 100


def poisoned_request(key: str, model: str = "assistant", value: bytes = b"why \xff\xfe") -> bytes:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return (
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"x-garrison-justification: " + value + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def send_raw(port: int, request: bytes) -> tuple[int, bytes]:
    """One raw HTTP/1.1 exchange (aiohttp's client will not send non-UTF-8 header bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await reader.readexactly(length)
    finally:
        writer.close()


async def good_calls(world: World, n: int) -> list[int]:
    """``n`` model calls by carol, each followed by an audited admin read (which waits for
    its ``admin.read`` event to be durable, as the call waits for ``request.allowed``)."""
    body = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {world.keys['carol']}", JUSTIFICATION_HEADER: "INC-1"}
    admin = {"authorization": f"Bearer {world.admin_key}"}
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.post(world.base + CHAT, json=body, headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)
            async with session.get(world.base + "/admin/v1/models", headers=admin) as resp:
                await resp.read()
                statuses.append(resp.status)
    return statuses


@pytest.fixture(params=[False, True], ids=["fail-closed", "fail-open"])
async def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    world = await start_world(tmp_path)
    try:
        if request.param:
            await world.gateway.stop()
            world.settings = dataclasses.replace(world.settings, audit_fail_open=True)
            world.gateway = Gateway(world.settings)
            await world.gateway.start()
        yield world
    finally:
        await stop_world(world)


async def test_a_non_utf8_justification_is_400_audited_and_never_forwarded(
    any_world: World,
) -> None:
    world = any_world
    status, body = await send_raw(world.gateway.port, poisoned_request(world.keys["alice"]))
    assert status == 400, body
    error = orjson.loads(body)["error"]
    assert error["code"] == "invalid_request"
    assert JUSTIFICATION_HEADER in error["message"] and "UTF-8" in error["message"]
    assert world.mock.seen == []
    await world.settle()
    assert world.events("request.allowed") == []
    (denied,) = world.events("request.denied")
    assert denied["data"]["reasons"] == ["request.malformed"]
    assert "justification" not in denied["data"]


async def test_a_poisoning_caller_in_a_loop_stops_nobody_else(any_world: World) -> None:
    world = any_world
    stop = asyncio.Event()
    poisoned: list[int] = []

    async def poison() -> None:
        request = poisoned_request(world.keys["alice"])
        while not stop.is_set():
            status, _ = await send_raw(world.gateway.port, request)
            poisoned.append(status)

    flood = [asyncio.create_task(poison()) for _ in range(2)]
    try:
        statuses = await good_calls(world, GOOD_CALLS)
    finally:
        stop.set()
        await asyncio.gather(*flood)
    assert statuses == [200] * (2 * GOOD_CALLS)
    assert poisoned and set(poisoned) == {400}
    await world.settle()
    allowed = world.events("request.allowed")
    assert len(allowed) == GOOD_CALLS
    assert {e["principal_id"] for e in allowed} == {
        world.gateway.state.snapshot.credentials[world.keys["carol"].split("_")[1]].principal_id
    }
    assert len(world.events("request.denied")) == len(poisoned)
    assert len(world.events("admin.read")) == GOOD_CALLS


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\xed\xa0\x80", id="utf8-encoded-surrogate"),
        pytest.param(b"\xc3\x28", id="bad-continuation"),
        pytest.param(b"ok\x7fnot", id="delete-char"),
        pytest.param("zero\u200bwidth".encode(), id="format-char"),
        pytest.param("line\u2028break".encode(), id="line-separator"),
    ],
)
async def test_unprintable_justifications_are_400_for_any_model(world: World, value: bytes) -> None:
    for model in ("assistant", "cyber-model", "no-such-model"):
        request = poisoned_request(world.keys["bob"], model, value)
        status, body = await send_raw(world.gateway.port, request)
        assert status == 400, body
    assert world.mock.seen == []


# ── the rules themselves (pure) ────────────────────────────────────────────────────────────
def test_an_absent_justification_is_empty() -> None:
    assert caller_justification(CIMultiDict()) == ""


def test_a_justification_is_stripped_and_kept_whole_up_to_the_limit() -> None:
    text = "é" * JUSTIFICATION_MAX_CHARS
    assert caller_justification(CIMultiDict({JUSTIFICATION_HEADER: f"  {text} "})) == text


def test_a_justification_over_the_limit_is_refused() -> None:
    text = "j" * (JUSTIFICATION_MAX_CHARS + 1)
    with pytest.raises(BadRequest, match="longer than 500"):
        caller_justification(CIMultiDict({JUSTIFICATION_HEADER: text}))


def test_a_repeated_justification_is_refused() -> None:
    headers = CIMultiDict([(JUSTIFICATION_HEADER, "a"), (JUSTIFICATION_HEADER, "b")])
    with pytest.raises(BadRequest, match="more than once"):
        caller_justification(headers)


@pytest.mark.parametrize("text", ["a\udcffb", "tab\there", "nul\x00", "esc\x1b[31m"])
def test_text_that_is_not_printable_utf8_is_refused(text: str) -> None:
    with pytest.raises(BadRequest):
        caller_justification(CIMultiDict({JUSTIFICATION_HEADER: text}))


async def test_behind_the_check_an_unencodable_event_fails_only_its_own_call(
    any_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: were poisoned text to get past the header check, its event fails
    to encode when appended — a 500 for that call alone, never forwarded (even failing open)."""
    world = any_world
    monkeypatch.setattr(
        gateway_app, "caller_justification", lambda headers: headers.get(JUSTIFICATION_HEADER, "")
    )
    status, body = await send_raw(world.gateway.port, poisoned_request(world.keys["alice"]))
    assert status == 500, body
    assert world.mock.seen == []
    assert await good_calls(world, 3) == [200] * 6
    await world.settle()
    assert len(world.events("request.allowed")) == 3
    (failed,) = [e for e in world.events("request.completed") if e["data"]["status"] == 500]
    assert failed["data"]["outcome"] == "audit_record_invalid"
