"""The descriptor limit is raised at start and the concurrency fits beside a reserve."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from garrison.gateway.fd_limit import FD_RESERVE, FDS_PER_CALL, plan

INF = resource.RLIM_INFINITY
GARRISON = [sys.executable, "-m", "garrison.cli.main"]


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    chosen = plan(1024, 65536, 4096)
    assert chosen.soft == 65536
    assert chosen.enough and chosen.max_calls == 4096


def test_an_unlimited_hard_limit_raises_the_soft_limit_to_what_is_needed() -> None:
    chosen = plan(1024, INF, 4096)
    assert chosen.soft == 4096 * FDS_PER_CALL + FD_RESERVE
    assert chosen.enough and chosen.max_calls == 4096


def test_a_soft_limit_already_high_enough_is_left_alone() -> None:
    assert plan(1 << 20, 1 << 20, 4096).soft == 1 << 20
    assert plan(INF, INF, 4096).soft == INF


def test_a_short_hard_limit_admits_fewer_calls_and_keeps_the_reserve() -> None:
    chosen = plan(1024, 1024, 4096)
    assert not chosen.enough
    assert chosen.max_calls == (1024 - FD_RESERVE) // FDS_PER_CALL
    assert chosen.max_calls * FDS_PER_CALL + FD_RESERVE <= 1024


def test_a_limit_below_the_reserve_admits_nothing() -> None:
    assert plan(100, 100, 4096).max_calls == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_under_a_low_hard_limit_warns_and_still_serves(tmp_path: Path) -> None:
    """`ulimit -n 1024` (soft and hard): the gateway says so loudly and caps its calls."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    data = tmp_path / "data"
    port = _free_port()
    done = subprocess.run(
        [*GARRISON, "init", "--data-dir", str(data), "--port", str(port)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        [*GARRISON, "serve", "--config", str(data / "garrison.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=low_limit,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "never listened"
            time.sleep(0.05)
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    text = stderr.decode()
    assert "FILE DESCRIPTOR LIMIT TOO LOW" in text
    assert f"Admitting at most {(1024 - FD_RESERVE) // FDS_PER_CALL} calls" in text
