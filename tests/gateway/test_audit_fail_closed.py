"""Fail closed: if the audit log cannot be written, allowed calls are refused and reach nothing;
and the event of every allowed call is durable before the upstream sees the call. On SQLite
and on PostgreSQL (the log shared by replicas: "cannot be written" is its write lock held)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from aiohttp import web

from garrison.domain import AuthStyle, Level, UpstreamApi
from tests.conftest import BACKENDS
from tests.support.db import hold_audit_lock
from tests.support.servers import one_route_upstream
from tests.support.shapes import ANTHROPIC_ERROR_TYPES
from tests.support.world import UPSTREAM_KEY, World, world_on

pytestmark = pytest.mark.e2e


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(request.param, tmp_path) as w:
        yield w


CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
USER = [{"role": "user", "content": "hello"}]


async def chat(world: World, model: str = "assistant") -> tuple[int, str, bytes]:
    headers = {"authorization": f"Bearer {world.keys['alice']}"}
    body = {"model": model, "messages": USER}
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + CHAT, json=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("x-request-id", ""), await resp.read()


async def claude(world: World) -> tuple[int, bytes]:
    headers = {"x-api-key": world.keys["alice"], "anthropic-version": "2023-06-01"}
    body = {"model": "claude", "max_tokens": 8, "messages": USER}
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + MESSAGES, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


async def until_served(world: World) -> tuple[int, str, bytes]:
    """Call until served: after an outage the log is probed in the background, so the first
    calls may still be refused (503) for a few probe intervals."""
    deadline = time.monotonic() + 5
    while True:
        status, request_id, raw = await chat(world)
        if status != 503 or time.monotonic() > deadline:
            return status, request_id, raw
        await asyncio.sleep(0.05)


async def refused_while_locked(world: World) -> str:
    """Make one allowed call while the log is locked; it must be a 503. Its request id."""
    await world.settle()
    with hold_audit_lock(world.settings.database_url):
        status, request_id, raw = await chat(world)
    assert status == 503, raw
    return request_id


# ── refused while the log cannot be written ────────────────────────────────────────────────
async def test_allowed_call_is_503_and_reaches_nothing_while_audit_is_locked(
    world: World,
) -> None:
    await world.settle()
    with hold_audit_lock(world.settings.database_url):
        status, _, raw = await chat(world)
    assert status == 503
    doc = orjson.loads(raw)
    assert list(doc) == ["error"]
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["code"] == "audit_unavailable"
    assert world.mock.seen == []


async def test_allowed_anthropic_call_is_503_in_anthropic_shape_while_audit_is_locked(
    world: World,
) -> None:
    await world.settle()
    with hold_audit_lock(world.settings.database_url):
        status, raw = await claude(world)
    assert status == 503
    doc = orjson.loads(raw)
    assert set(doc) == {"type", "error"} and doc["type"] == "error"
    assert set(doc["error"]) == {"type", "message"}
    assert doc["error"]["type"] in ANTHROPIC_ERROR_TYPES
    assert world.mock.seen == []


# ── recovery ───────────────────────────────────────────────────────────────────────────────
async def test_calls_succeed_and_audit_recovered_is_recorded_after_the_lock_is_released(
    world: World,
) -> None:
    await refused_while_locked(world)
    status, _, raw = await until_served(world)
    assert status == 200, raw
    assert len(world.mock.seen) == 1
    await world.settle()
    recovered = world.events("audit.recovered")
    assert len(recovered) == 1
    assert recovered[0]["data"]["failed_batches"] >= 1


async def test_refused_call_is_recorded_once_the_log_recovers(world: World) -> None:
    request_id = await refused_while_locked(world)
    await until_served(world)
    await world.settle()
    mine = [e for e in world.events() if e["request_id"] == request_id]
    assert [e["name"] for e in mine] == ["request.completed"]
    assert mine[0]["data"]["status"] == 503
    assert mine[0]["data"]["outcome"] == "audit_unavailable"


# ── ordering: durable before forwarded ─────────────────────────────────────────────────────
@contextlib.asynccontextmanager
async def probe_upstream(engine: sa.Engine, found: dict[str, bool]) -> AsyncIterator[int]:
    """An upstream that, on receiving a call, checks the audit log already holds its
    ``request.allowed`` event (recorded in ``found`` by request id), then answers."""

    async def answer(request: web.Request) -> web.Response:
        request_id = request.headers.get("x-request-id", "")
        with engine.connect() as conn:
            count = conn.execute(
                sa.text("SELECT count(*) FROM audit_events WHERE name = :n AND request_id = :r"),
                {"n": "request.allowed", "r": request_id},
            ).scalar()
        found[request_id] = count == 1
        body: dict[str, Any] = {
            "id": "chatcmpl-probe",
            "object": "chat.completion",
            "created": 0,
            "model": "probe",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async with one_route_upstream("/v1/chat/completions", answer) as port:
        yield port


async def test_allowed_event_is_durable_before_the_upstream_sees_the_call(world: World) -> None:
    found: dict[str, bool] = {}
    async with probe_upstream(world.directory.engine, found) as port:
        world.directory.create_model(
            "m-probe",
            upstream_url=f"http://127.0.0.1:{port}/v1",
            upstream_model="probe",
            api=UpstreamApi.OPENAI,
            auth_style=AuthStyle.BEARER,
            upstream_key=UPSTREAM_KEY,
            level=Level.INTERNAL,
            now=time.time(),
        )
        await world.reload()
        replies = await asyncio.gather(*(chat(world, "m-probe") for _ in range(8)))
    assert [status for status, _, _ in replies] == [200] * 8
    assert set(found) == {request_id for _, request_id, _ in replies}
    assert all(found.values()), found


async def test_refusals_are_immediate_while_the_log_is_known_down_and_recovery_is_found(
    world: World,
) -> None:
    """Once the log is known to be down, a call does not wait out the append timeout (2 s)
    to be refused; the writer probes in the background and service resumes by itself."""
    await world.settle()
    with hold_audit_lock(world.settings.database_url):
        status, _, _ = await chat(world)  # finds the outage
        assert status == 503
        waits = []
        for _ in range(5):
            started = time.monotonic()
            status, _, raw = await chat(world)
            waits.append(time.monotonic() - started)
            assert status == 503, raw
        assert max(waits) < 0.5, waits
    deadline = time.monotonic() + 5
    while True:
        status, _, _ = await chat(world)
        if status == 200:
            break
        assert time.monotonic() < deadline, "service never resumed after the log came back"
        await asyncio.sleep(0.05)
    assert len(world.mock.seen) == 1  # only the call after recovery reached the upstream
    await world.settle()
    assert world.events("audit.recovered")
