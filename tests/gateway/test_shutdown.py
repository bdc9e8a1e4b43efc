"""Stopping: calls in flight finish (up to the drain deadline), new calls are refused with a
clean 503, calls past the deadline end with an error in the API's shape recorded as
``shutdown``, and the process leaves a final checkpoint and a folded WAL behind."""

from __future__ import annotations

import asyncio
import os
import shutil
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
import orjson
import pytest

from garrison.gateway.limits import GatewayLimits
from garrison.mock import MockConfig
from tests.support.world import UPSTREAM_KEY, World, start_world, stop_world

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
USER = [{"role": "user", "content": "hello"}]
GARRISON = [sys.executable, "-m", "garrison.cli.main"]


@pytest.fixture
async def slow_world(tmp_path: Path) -> AsyncIterator[World]:
    # 20 chunks 50 ms apart: a stream that takes ~1 s, long enough to be in flight.
    world = await start_world(
        tmp_path,
        limits=GatewayLimits(),
        mock_config=MockConfig(expected_api_key=UPSTREAM_KEY, tokens=20, chunk_delay_ms=50),
    )
    try:
        yield world
    finally:
        await stop_world(world)


def _auth(world: World, path: str = CHAT) -> dict[str, str]:
    key = world.keys["alice"]
    if path == MESSAGES:
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"authorization": f"Bearer {key}"}


async def _stream(
    world: World, session: aiohttp.ClientSession, model: str
) -> tuple[int, str, bytes]:
    body = {"model": model, "messages": USER, "stream": True}
    async with session.post(world.base + CHAT, json=body, headers=_auth(world)) as resp:
        return resp.status, resp.headers.get("x-request-id", ""), await resp.read()


async def _completed(world: World, request_id: str) -> dict[str, Any]:
    await world.settle()
    found = [e for e in world.events("request.completed") if e["request_id"] == request_id]
    assert len(found) == 1, found
    return found[0]


async def _until_live(world: World, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(world.gateway.state.live) < count:
        assert time.monotonic() < deadline, "the calls never started"
        await asyncio.sleep(0.01)


async def test_drain_lets_a_stream_in_flight_finish_whole(slow_world: World) -> None:
    async with aiohttp.ClientSession() as session:
        call = asyncio.create_task(_stream(slow_world, session, "assistant"))
        await _until_live(slow_world, 1)
        cut = await slow_world.gateway.drain(deadline_s=10)
        status, request_id, raw = await call
    assert cut == 0
    assert status == 200
    assert raw.rstrip().endswith(b"data: [DONE]")
    event = await _completed(slow_world, request_id)
    assert event["data"]["status"] == 200


async def test_drain_deadline_cuts_a_long_stream_with_a_shutdown_error(slow_world: World) -> None:
    async with aiohttp.ClientSession() as session:
        call = asyncio.create_task(_stream(slow_world, session, "m-slow-stream"))
        await _until_live(slow_world, 1)
        cut = await slow_world.gateway.drain(deadline_s=0.2)
        status, request_id, raw = await call
    assert cut == 1
    assert status == 200  # the stream had started; it ends with an error event
    last = [line for line in raw.split(b"\n") if line.startswith(b"data:")][-1]
    error = orjson.loads(last[5:])["error"]
    assert error["code"] == "shutting_down"
    event = await _completed(slow_world, request_id)
    assert event["data"]["outcome"] == "shutdown"
    assert event["data"]["status"] == 503
    assert event["data"]["reasons"] == ["gateway.shutting_down"]
    assert not slow_world.gateway.state.live


async def test_draining_refuses_new_calls_and_reports_not_ready(slow_world: World) -> None:
    async with aiohttp.ClientSession() as early, aiohttp.ClientSession() as streaming:
        # A kept-alive connection opened before the stop, as an SDK's pool would hold.
        async with early.get(slow_world.base + "/healthz") as resp:
            assert resp.status == 200
        call = asyncio.create_task(_stream(slow_world, streaming, "assistant"))
        await _until_live(slow_world, 1)
        drain = asyncio.create_task(slow_world.gateway.drain(deadline_s=10))
        await asyncio.sleep(0.05)
        body = {"model": "assistant", "messages": USER}
        async with early.post(slow_world.base + CHAT, json=body, headers=_auth(slow_world)) as resp:
            assert resp.status == 503
            assert resp.headers.get("connection", "").lower() == "close"
            refused = await resp.json()
            request_id = resp.headers["x-request-id"]
        assert refused["error"]["code"] == "shutting_down"
        async with aiohttp.ClientSession() as probe:
            with pytest.raises(aiohttp.ClientConnectionError):
                await probe.get(slow_world.base + "/healthz")  # the listener is closed
        status, _, _ = await call
        assert status == 200
        assert await drain == 0
    await slow_world.settle()
    denied = [e for e in slow_world.events("request.denied") if e["request_id"] == request_id]
    assert denied and denied[0]["data"]["reasons"] == ["gateway.shutting_down"]
    assert not slow_world.mock.seen or all(
        seen.request_id != request_id for seen in slow_world.mock.seen
    )


async def test_readyz_says_not_accepting_while_draining(slow_world: World) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(slow_world.base + "/readyz") as resp:
            assert resp.status == 200
        slow_world.gateway.state.draining = True
        try:
            async with session.get(slow_world.base + "/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json()) == {"status": "not_ready", "reason": "stopping"}
        finally:
            slow_world.gateway.state.draining = False


# ── the real process and the real signal ─────────────────────────────────────────────────────
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("garrison serve never listened")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_drains_and_exits_zero_with_a_verifiable_log(
    tmp_path: Path, signum: signal.Signals
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    data = tmp_path / "data"
    port = _free_port()
    init = subprocess.run(
        [*GARRISON, "init", "--data-dir", str(data), "--port", str(port)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    config = data / "garrison.toml"
    proc = subprocess.Popen(
        [*GARRISON, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        _wait_listening(port, proc)
        started = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert b"Traceback" not in stderr
    assert took < 10
    wal = data / "garrison.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # folded into the database file
    verify = subprocess.run(
        [*GARRISON, "audit", "verify", "--config", str(config)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, (verify.stdout, verify.stderr)
    conn = sqlite3.connect(data / "garrison.db")
    try:
        rows = conn.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
        names = [orjson.loads(r[0])["name"] for r in rows]
    finally:
        conn.close()
    assert names.count("gateway.started") == 1
    assert names[-1] == "gateway.stopped"


async def test_low_disk_makes_readyz_not_ready_and_raises_an_alert(
    slow_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.admin import admin_call

    real = shutil.disk_usage

    def almost_full(path: object) -> object:
        usage = real(str(path))
        return type(usage)(usage.total, usage.total - 1024, 1024)  # 1 KiB free

    monkeypatch.setattr(shutil, "disk_usage", almost_full)
    await slow_world.gateway.check_disk()
    async with (
        aiohttp.ClientSession() as session,
        session.get(slow_world.base + "/readyz") as resp,
    ):
        assert resp.status == 503
        assert (await resp.json()) == {"status": "not_ready", "reason": "disk_low"}
    status, alerts = await admin_call(slow_world, slow_world.admin_key, "GET", "/alerts")
    assert status == 200 and any(a["rule_id"] == "disk-low" for a in alerts)
    monkeypatch.setattr(shutil, "disk_usage", real)
    await slow_world.gateway.check_disk()
    assert not slow_world.gateway.state.disk_low
