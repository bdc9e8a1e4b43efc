"""A process killed mid-call leaves no call "allowed, never completed": once its lease lapses,
another process records an explicit ``process_ended`` outcome for each of its calls."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from garrison.serve.upkeep import INSTANCE_LEASE_S
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
CHAT = "/v1/chat/completions"
STREAMS = 3


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path)
    try:
        yield w
    finally:
        await stop_world(w)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the second gateway exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("the second gateway never listened")


async def test_calls_of_a_killed_process_get_a_process_ended_outcome(world: World) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env["GARRISON_PORT"] = str(port)
    # A second process on the same database, as in a two-process deployment.
    other = subprocess.Popen(
        [*GARRISON, "serve", "--config", str(world.root / "data" / "garrison.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    sessions: list[aiohttp.ClientSession] = []
    responses: list[aiohttp.ClientResponse] = []
    try:
        await _listening(port, other)
        body: dict[str, Any] = {
            "model": "m-slow-stream",
            "messages": [{"role": "user", "content": "hi"}],
        }
        body["stream"] = True
        headers = {"authorization": f"Bearer {world.keys['alice']}"}
        request_ids = []
        for _ in range(STREAMS):
            session = aiohttp.ClientSession()
            sessions.append(session)
            resp = await session.post(f"http://127.0.0.1:{port}{CHAT}", json=body, headers=headers)
            responses.append(resp)
            assert resp.status == 200
            assert await resp.content.readany()  # flowing: allowed, recorded, forwarded
            request_ids.append(resp.headers["x-request-id"])
        other.send_signal(signal.SIGKILL)
        other.wait(timeout=30)
    finally:
        if other.poll() is None:
            other.kill()
        for resp in responses:
            resp.close()
        for session in sessions:
            await session.close()

    await world.settle()
    allowed = {e["request_id"] for e in world.events("request.allowed")}
    assert set(request_ids) <= allowed
    completed = [e for e in world.events("request.completed") if e["request_id"] in request_ids]
    assert completed == []  # the killed process wrote no outcome
    # Its lease has not lapsed yet: nothing is marked (a live process's calls never are).
    assert await world.gateway.end_lapsed_instances() == 0
    # Once the lease has lapsed, this process ends the dead one's calls, exactly once.
    later = time.time() + INSTANCE_LEASE_S + 1
    assert await world.gateway.end_lapsed_instances(now=later) == STREAMS
    assert await world.gateway.end_lapsed_instances(now=later) == 0
    await world.settle()
    ended = [e for e in world.events("request.completed") if e["request_id"] in request_ids]
    assert sorted(e["request_id"] for e in ended) == sorted(request_ids)
    for event in ended:
        assert event["data"]["outcome"] == "process_ended"
        assert event["data"]["status"] is None
        assert event["data"]["reasons"] == ["gateway.process_ended"]
        assert event["data"]["instance"] == request_ids[0][:18]
        assert event["credential_id"] is not None and event["model"] == "m-slow-stream"
    # This process's own calls (none unfinished) are untouched, and the log still verifies.
    verify = subprocess.run(
        [*GARRISON, "audit", "verify", "--config", str(world.root / "data" / "garrison.toml")],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, (verify.stdout, verify.stderr)


async def test_a_clean_stop_leaves_nothing_for_others_to_end(tmp_path: Path) -> None:
    first = await start_world(tmp_path / "a")
    instance = first.gateway.instance_id
    await stop_world(first)
    conn = sqlite3.connect(first.db_path)
    try:
        row = conn.execute(
            "SELECT ended_at IS NOT NULL, ended_by FROM gateway_instances WHERE id = ?",
            (instance,),
        ).fetchone()
    finally:
        conn.close()
    assert row == (1, instance)
