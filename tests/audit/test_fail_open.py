"""The explicit opt-out: with ``audit_fail_open`` calls are forwarded while the audit log
cannot be written, each one logged loudly; without it (the default) they are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from garrison.server import Gateway
from tests.support.db import hold_write_lock
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

# How long to wait for the writer to notice the log is writable again.
RECOVERY_WAIT_S = 5.0


@pytest.fixture
async def open_world(tmp_path: Path) -> AsyncIterator[World]:
    """The usual world, its gateway restarted with ``audit_fail_open=True`` in Settings."""
    world = await start_world(tmp_path)
    try:
        await world.gateway.stop()
        world.settings = dataclasses.replace(world.settings, audit_fail_open=True)
        world.gateway = Gateway(world.settings)
        await world.gateway.start()
        yield world
    finally:
        await stop_world(world)


async def chat(world: World) -> tuple[int, str]:
    body = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {world.keys['alice']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers.get("x-request-id", "")


async def test_call_succeeds_while_the_log_is_locked_when_fail_open_is_on(
    open_world: World,
) -> None:
    await open_world.settle()
    with hold_write_lock(open_world.db_path):
        status, request_id = await chat(open_world)
    assert status == 200
    assert request_id in open_world.mock.seen_request_ids


async def test_fail_open_call_logs_an_error_naming_audit_fail_open(
    open_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await open_world.settle()
    with caplog.at_level(logging.ERROR, logger="garrison"), hold_write_lock(open_world.db_path):
        _, request_id = await chat(open_world)
    loud = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and "AUDIT FAIL-OPEN" in r.getMessage()
        and request_id in r.getMessage()
    ]
    assert loud, [r.getMessage() for r in caplog.records]


async def test_call_is_503_while_the_log_is_locked_by_default(world: World) -> None:
    assert world.settings.audit_fail_open is False
    await world.settle()
    with hold_write_lock(world.db_path):
        status, request_id = await chat(world)
    assert status == 503
    assert request_id not in world.mock.seen_request_ids


async def test_audit_recovered_is_written_after_the_lock_is_released(open_world: World) -> None:
    await open_world.settle()
    with hold_write_lock(open_world.db_path):
        status, _ = await chat(open_world)
    assert status == 200
    deadline = asyncio.get_running_loop().time() + RECOVERY_WAIT_S
    while not open_world.events("audit.recovered"):
        assert asyncio.get_running_loop().time() < deadline, "no audit.recovered event"
        await asyncio.sleep(0.05)
    recovered = open_world.events("audit.recovered")
    assert len(recovered) == 1
    assert recovered[0]["data"]["failed_batches"] >= 1
