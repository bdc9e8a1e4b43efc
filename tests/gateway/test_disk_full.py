"""A full disk during audit writes: calls are refused (503, the API's own error shape) and
reach nothing; once space returns the gateway serves again by itself, every refusal is in
the log, and ``garrison audit verify`` passes.

Two ways to fill the disk: SQLite's own ``max_page_count`` on the audit connection (the
error SQLite raises is the one a full disk gives: ``database or disk is full``), and a real
4-MiB-class tmpfs mounted for the test (skipped where mounting is refused)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from garrison.audit.sqlite_sink import SqliteAuditSink
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
CHAT = "/v1/chat/completions"
# Calls made at most while waiting for the disk to run out (each writes two records).
MAX_CALLS_TO_FILL = 400
# SQLite's own ceiling on pages (its default max_page_count): "space has returned".
SQLITE_PAGE_CEILING = 4294967294


async def chat(world: World) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {world.keys['alice']}"}
    body = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + CHAT, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


async def ready(world: World) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(world.base + "/readyz") as resp:
        return resp.status, orjson.loads(await resp.read())


async def says_the_log_is_down(world: World) -> None:
    """/readyz takes the process out of the pool (read a few times: the background probe
    finds a transaction can be begun and lets one batch try again now and then)."""
    deadline = time.monotonic() + 3
    while True:
        status, body = await ready(world)
        if body == {"status": "not_ready", "reason": "audit_unavailable"}:
            assert status == 503
            return
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)


async def call_until_refused(world: World) -> None:
    """Call until the disk runs out: that call is a 503 and nothing more reaches upstream."""
    for _ in range(MAX_CALLS_TO_FILL):
        seen = len(world.mock.seen)
        status, raw = await chat(world)
        if status == 503:
            assert_refused_for_the_log(raw)
            assert len(world.mock.seen) == seen  # the refused call reached nothing
            return
        assert status == 200, raw
    raise AssertionError(f"the disk never filled in {MAX_CALLS_TO_FILL} calls")


def assert_refused_for_the_log(raw: bytes) -> None:
    doc = orjson.loads(raw)
    assert list(doc) == ["error"]
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["code"] == "audit_unavailable"


async def refused_while_full(world: World, calls: int = 5) -> None:
    """While the disk is full every call is refused and none reaches the upstream."""
    seen = len(world.mock.seen)
    for _ in range(calls):
        status, raw = await chat(world)
        assert status == 503, raw
        assert_refused_for_the_log(raw)
    assert len(world.mock.seen) == seen


async def served_again(world: World) -> None:
    """Space is back: the log recovers by itself (background probe) and calls are served."""
    deadline = time.monotonic() + 10
    while True:
        status, raw = await chat(world)
        if status == 200:
            break
        assert status == 503 and time.monotonic() < deadline, raw
        await asyncio.sleep(0.1)
    await world.settle()
    recovered = world.events("audit.recovered")
    assert recovered and recovered[-1]["data"]["failed_batches"] >= 1
    refused = [e for e in world.events("request.completed") if e["data"]["status"] == 503]
    assert refused and all(e["data"]["outcome"] == "audit_unavailable" for e in refused)


def verify(world: World) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    config = world.root / "data" / "garrison.toml"
    done = subprocess.run(
        [*GARRISON, "audit", "verify", "--config", str(config)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)


def audit_connection(world: World) -> sqlite3.Connection:
    sink = world.gateway.audit._sink
    assert isinstance(sink, SqliteAuditSink)
    return sink._connection()


async def test_full_database_refuses_calls_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    world = await start_world(tmp_path)
    try:
        status, raw = await chat(world)
        assert status == 200, raw
        await world.settle()
        conn = audit_connection(world)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        # No page beyond those the database has: the next growth fails as a full disk does.
        conn.execute(f"PRAGMA max_page_count={pages}")
        await call_until_refused(world)
        await refused_while_full(world)
        await says_the_log_is_down(world)
        conn.execute(f"PRAGMA max_page_count={SQLITE_PAGE_CEILING}")
        await served_again(world)
    finally:
        await stop_world(world)
    verify(world)


@contextlib.contextmanager
def tiny_filesystem(where: Path, size_mib: int) -> Iterator[Path]:
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}): the injected test covers it")
    if done.returncode != 0:
        pytest.skip(
            "mounting a small tmpfs is refused here (needs root or CAP_SYS_ADMIN: "
            f"{done.stderr.decode(errors='replace').strip()}); the injected test covers it"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10, check=False)


def fill(path: Path) -> None:
    """Take every free byte of the file system ``path`` is on."""
    with path.open("wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


async def test_real_full_filesystem_refuses_calls_and_recovers(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "small", 32) as root:
        world = await start_world(root)
        try:
            status, raw = await chat(world)
            assert status == 200, raw
            await world.settle()
            filler = root / "filler"
            fill(filler)
            await call_until_refused(world)
            await refused_while_full(world)
            await says_the_log_is_down(world)
            filler.unlink()
            await served_again(world)
        finally:
            await stop_world(world)
        verify(world)
