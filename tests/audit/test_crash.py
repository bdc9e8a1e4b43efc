"""The crash guarantee: ``kill -9`` the gateway while it serves a bounded load, restart it on
the same config, and nothing the upstream saw is missing from the log, which verifies and
whose tree continues where it was."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
import pytest

from garrison.bootstrap import init, open_directory
from tests.support.world import seed

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
WORKERS = 8
MAX_CALLS = 300
KILL_AFTER = 100  # completed calls before the gateway is killed
LOAD_TIMEOUT_S = 30.0
CALLS_AFTER_RESTART = 5
# Longest the test waits for the idle writer's checkpoint before the crash: many times its
# 1 s quiet interval (a loaded machine delays the writer's idle ticks).
SIGNED_WITHIN_S = 15.0
# Longest a started process may take to answer HTTP (a process that exits fails at once):
# it imports and opens its database in ~2 s of CPU, which a loaded machine stretched past
# 15 s.
STARTUP_WITHIN_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Processes:
    """Every process the test starts, with its log file; all are killed at the end."""

    root: Path
    running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            [*GARRISON, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GARRISON_CONFIG": "", **(env or {})},
        )
        self.running.append((proc, log))
        return proc

    def output(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc, log in self.running:
            try:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            finally:
                log.close()
        self.running.clear()


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    p = Processes(tmp_path_factory.mktemp("crash-procs"))
    try:
        yield p
    finally:
        p.stop_all()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = STARTUP_WITHIN_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GARRISON_CONFIG": ""},
        check=False,
    )


# ── reading the log ────────────────────────────────────────────────────────────────────────
def allowed_request_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT request_id FROM audit_events WHERE name = 'request.allowed'"
        ).fetchall()
    finally:
        conn.close()
    return {r[0] for r in rows}


def checkpoint_sizes(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT tree_size FROM audit_checkpoints ORDER BY seq")]
    finally:
        conn.close()


def event_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM audit_events").fetchone()[0])
    finally:
        conn.close()


def wait_signed(db: Path) -> None:
    """Until a stored checkpoint covers every event committed (a condition: a pause of a
    little more than the checkpoint interval was too short on a loaded machine)."""
    deadline = time.monotonic() + SIGNED_WITHIN_S
    while not ((sizes := checkpoint_sizes(db)) and max(sizes) == event_count(db)):
        assert time.monotonic() < deadline, f"no checkpoint of every event: {sizes}"
        time.sleep(0.05)


# ── load ───────────────────────────────────────────────────────────────────────────────────
@dataclass
class Load:
    sent: int = 0
    completed: int = 0
    failed: int = 0


async def _call(session: aiohttp.ClientSession, base: str, key: str, i: int) -> int:
    async with session.post(
        base + "/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": f"call {i}"}]},
        headers={"authorization": f"Bearer {key}"},
    ) as resp:
        await resp.read()
        return resp.status


async def load_and_kill(base: str, key: str, gateway: subprocess.Popen[bytes]) -> Load:
    """Up to MAX_CALLS calls from WORKERS workers; SIGKILL the gateway after KILL_AFTER."""
    load = Load()

    async def worker(session: aiohttp.ClientSession) -> None:
        while load.sent < MAX_CALLS:
            load.sent += 1
            try:
                status = await _call(session, base, key, load.sent)
            except (TimeoutError, aiohttp.ClientError):
                load.failed += 1
                return  # the gateway is gone
            assert status == 200, status
            load.completed += 1
            if load.completed == KILL_AFTER:
                gateway.send_signal(signal.SIGKILL)

    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        asyncio.timeout(LOAD_TIMEOUT_S),
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        await asyncio.gather(*(worker(session) for _ in range(WORKERS)))
    return load


async def calls(base: str, key: str, n: int) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        return [await _call(session, base, key, i) for i in range(n)]


def seen_by_upstream(upstream: str) -> set[str]:
    with urllib.request.urlopen(upstream + "/_mock/seen", timeout=5) as resp:  # noqa: S310
        return {rid for rid in orjson.loads(resp.read())["request_ids"] if rid}


# ── the test ───────────────────────────────────────────────────────────────────────────────
@dataclass
class Outcome:
    load: Load
    seen: set[str]
    allowed: set[str]
    sizes_before: list[int]
    events_before: int
    sizes_after: list[int]
    events_after: int
    verify: dict[str, Any]
    serve_exit: int


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, procs: Processes) -> Outcome:
    """Seed, serve, load, kill -9, restart, a few calls, clean stop; what happened."""
    tmp_path = tmp_path_factory.mktemp("crash")
    done = init(tmp_path / "data")
    config = str(done.config_path)
    db = tmp_path / "data" / "garrison.db"

    up_port = _free_port()
    mock = procs.start("mock", "mock-upstream", "--port", str(up_port))
    upstream = f"http://127.0.0.1:{up_port}"
    wait_http(upstream + "/v1/models", mock)
    directory = open_directory(done.settings, actor="test")
    try:
        keys = seed(directory, upstream + "/v1", time.time())
    finally:
        directory.engine.dispose()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = procs.start("serve-1", "serve", "--config", config, env={"GARRISON_PORT": str(port)})
    wait_http(base + "/healthz", gateway)
    # A few calls, then a pause until the idle writer has signed them: a checkpoint is signed
    # before the crash, so the restarted gateway has a signed tree to continue (plus a tail
    # to fold).
    assert asyncio.run(calls(base, keys["alice"], 3)) == [200] * 3
    wait_signed(db)
    load = asyncio.run(load_and_kill(base, keys["alice"], gateway))
    assert gateway.wait(timeout=10) == -signal.SIGKILL
    sizes_before, events_before = checkpoint_sizes(db), event_count(db)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    again = procs.start("serve-2", "serve", "--config", config, env={"GARRISON_PORT": str(port)})
    wait_http(base + "/healthz", again)
    statuses = asyncio.run(calls(base, keys["alice"], CALLS_AFTER_RESTART))
    assert statuses == [200] * CALLS_AFTER_RESTART, procs.output("serve-2")
    again.send_signal(signal.SIGINT)
    serve_exit = again.wait(timeout=15)

    verified = run("audit", "verify", "--json", "--config", config)
    assert verified.stdout, verified.stderr
    return Outcome(
        load=load,
        seen=seen_by_upstream(upstream),
        allowed=allowed_request_ids(db),
        sizes_before=sizes_before,
        events_before=events_before,
        sizes_after=checkpoint_sizes(db),
        events_after=event_count(db),
        verify={**orjson.loads(verified.stdout), "exit": verified.returncode},
        serve_exit=serve_exit,
    )


def test_gateway_was_killed_in_the_middle_of_the_load(crashed: Outcome) -> None:
    assert KILL_AFTER <= crashed.load.completed < MAX_CALLS
    assert crashed.load.failed > 0  # calls were in flight when it died


def test_restarted_gateway_serves_and_stops_cleanly(crashed: Outcome) -> None:
    assert crashed.serve_exit == 0


def test_every_request_the_upstream_saw_has_its_allowed_event_after_a_crash(
    crashed: Outcome,
) -> None:
    assert len(crashed.seen) >= KILL_AFTER + CALLS_AFTER_RESTART
    assert crashed.seen - crashed.allowed == set()


def test_log_verifies_end_to_end_after_a_crash_and_restart(crashed: Outcome) -> None:
    assert crashed.verify["exit"] == 0, crashed.verify["problems"]
    assert crashed.verify["ok"]
    assert crashed.verify["events"] == crashed.events_after
    assert crashed.verify["unsigned_tail"] == 0


def test_tree_continues_after_a_crash(crashed: Outcome) -> None:
    before = crashed.sizes_before
    after = crashed.sizes_after[len(before) :]
    assert before, "no checkpoint was signed before the crash"
    # Usually the crash leaves an unsigned tail (the writer signs at most once a second, a
    # batch every few ms); if the very last commit happened to carry a checkpoint there is
    # none, and the fold below has nothing to add (not a failure of the product).
    assert max(before) <= crashed.events_before
    assert crashed.sizes_after[: len(before)] == before  # nothing signed was lost
    assert after, "no checkpoint after the restart"
    assert min(after) > max(before)
    # The unsigned tail was folded in: the first checkpoint after the restart covers every
    # event from before the crash. It may cover nothing more (not ">"): a restarted gateway
    # idle for its first second (a loaded machine between its start and the next call)
    # signs the folded tail alone.
    assert min(after) >= crashed.events_before
    assert after[-1] == crashed.events_after
