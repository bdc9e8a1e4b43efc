"""The contractor breach with the real ``openai`` client: bob's key works from his network;
the same key, leaked, is used from another one (another loopback address). Detection and
the playbook lock the key: the outsider's first call gets one answer at most, within a
second every further call is a ``PermissionDeniedError`` (from either network), and bob's
stream in flight is cut."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.support.world import World

pytestmark = pytest.mark.e2e

HOME, AWAY = "127.0.0.1", "127.0.1.9"
# Typed loosely: the SDK wants its own message TypedDicts.
USER: Any = [{"role": "user", "content": "Summarise the design doc."}]
# The targets: detected and contained within a second of the first hostile call.
CONTAIN_TARGET_S = 1.0
# Calls tried after containment, each expected to be refused.
AFTER_LOCK_TRIES = 5


def client_from(world: World, address: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{world.base}/v1",
        api_key=world.keys["bob"],
        max_retries=0,
        # openai types its client as its own httpx fork; the httpx client works the same.
        http_client=httpx.Client(  # type: ignore[arg-type]
            transport=httpx.HTTPTransport(local_address=address)
        ),
    )


@dataclass
class StreamRun:
    started: threading.Event = field(default_factory=threading.Event)
    chunks: int = 0
    text: str = ""
    completed: bool = False
    error: BaseException | None = None


def consume_stream(client: openai.OpenAI, run: StreamRun) -> None:
    try:
        stream = client.chat.completions.create(model="m-slow-stream", messages=USER, stream=True)
        with stream:
            for chunk in stream:
                run.chunks += 1
                if chunk.choices:
                    run.text += chunk.choices[0].delta.content or ""
                if run.chunks == 3:
                    run.started.set()
        run.completed = True
    except openai.APIError as exc:
        run.error = exc
    finally:
        run.started.set()


def ask(client: openai.OpenAI) -> tuple[str, Any]:
    """One chat call: ("ok", text) or ("refused", the error)."""
    try:
        reply = client.chat.completions.create(model="assistant", messages=USER)
    except openai.PermissionDeniedError as exc:
        return "refused", exc
    return "ok", reply.choices[0].message.content


async def test_leaked_key_is_contained_within_a_second_and_the_stream_is_cut(
    world: World,
) -> None:
    with client_from(world, HOME) as home, client_from(world, AWAY) as away:
        # Normal work from bob's network.
        kind, text = await asyncio.to_thread(ask, home)
        assert kind == "ok" and text
        run = StreamRun()
        streaming = asyncio.create_task(asyncio.to_thread(consume_stream, home, run))
        assert await asyncio.to_thread(run.started.wait, 10)
        assert run.error is None and run.chunks >= 3, run.error

        # The leak: the same key from another network. That call gets one answer at most
        # (answered, or cut if the lock lands while it is in flight).
        first_hostile = time.monotonic()
        first_kind, _ = await asyncio.to_thread(ask, away)
        assert first_kind in ("ok", "refused")
        # The outsider keeps trying; within a second of the first hostile call it is refused.
        refused_at = first_hostile if first_kind == "refused" else None
        while refused_at is None and time.monotonic() - first_hostile < CONTAIN_TARGET_S + 2:
            kind, _ = await asyncio.to_thread(ask, away)
            if kind == "refused":
                refused_at = time.monotonic()
        assert refused_at is not None, "the leaked key was never refused"
        assert refused_at - first_hostile <= CONTAIN_TARGET_S, refused_at - first_hostile

        # From then on every call is refused, from either network.
        for client in (away, home) * AFTER_LOCK_TRIES:
            kind, exc = await asyncio.to_thread(ask, client)
            assert kind == "refused"
            assert isinstance(exc, openai.PermissionDeniedError)
            assert exc.status_code == 403

        # Bob's stream in flight was cut mid-answer, with an error the SDK raises.
        await asyncio.wait_for(streaming, 10)
        assert not run.completed
        assert isinstance(run.error, openai.APIError), run.error
        assert run.chunks >= 3 and run.text

    await world.settle()
    alerts = [
        e for e in world.events("alert.raised") if e["data"]["rule_id"] == "key-multi-network"
    ]
    assert len(alerts) == 1
    assert alerts[0]["data"]["detected_after_s"] <= CONTAIN_TARGET_S
    (lock,) = world.events("lock.created")
    assert lock["actor"] == "playbook:contain-shared-key"
    assert lock["data"]["kind"] == "credential"
    cut = [
        e
        for e in world.events("request.completed")
        if e["model"] == "m-slow-stream" and e["data"]["outcome"] == "cut"
    ]
    assert len(cut) == 1
    refused = [
        e
        for e in world.events("request.denied")
        if e["credential_id"] == alerts[0]["credential_id"]
    ]
    assert len(refused) >= 2 * AFTER_LOCK_TRIES
    assert {e["data"]["status"] for e in refused} == {403}
    assert {tuple(e["data"]["reasons"]) for e in refused} == {("lock.active",)}
