"""Gateway replicas as real ``garrison serve`` processes on loopback, sharing one database:
the start-up and stop shared by the replica tests (``tests/e2e``) and the benches that run
several processes (``bench/lock_propagation.py``, ``bench/propagation_bench.py``).

(The benches import this module as the rest of ``tests.support``; in-process replicas are in
``tests.support.replicas``.)
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

# The CLI, as a child process of this interpreter.
GARRISON = [sys.executable, "-m", "garrison.cli.main"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_serve_config(
    root: Path, url: str, key_dir: Path, *, detect: bool = False, extra: str = ""
) -> Path:
    """``root/garrison.toml`` for replicas on ``url`` with the key files in ``key_dir``:
    loopback, the port from ``GARRISON_PORT``, the metrics listener off, detection off
    unless ``detect``; ``extra`` TOML after."""
    path = root / "garrison.toml"
    path.write_text(
        "[gateway]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n\n"
        "[storage]\n"
        f'database_url = "{url}"\n'
        f'key_dir = "{key_dir}"\n\n'
        "[detect]\n"
        f"enabled = {'true' if detect else 'false'}\n\n"
        "[metrics]\n"
        'listen = ""\n' + extra
    )
    path.chmod(0o600)
    return path


def spawn_replica(
    config: Path,
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    output: IO[bytes] | int = subprocess.DEVNULL,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``garrison serve --config config`` on a free port (``GARRISON_PORT`` added to
    ``env``), its output to ``output``; returns the process and its base URL (not yet
    ready: the caller waits for it)."""
    port = free_port()
    proc = subprocess.Popen(
        [*GARRISON, "serve", "--config", str(config)],
        env={**env, "GARRISON_PORT": str(port)},
        cwd=cwd,
        stdout=output,
        stderr=subprocess.DEVNULL if output == subprocess.DEVNULL else subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def spawn_mock_upstream(port: int) -> subprocess.Popen[bytes]:
    """Start ``garrison mock-upstream`` on ``port``, its output discarded."""
    return subprocess.Popen(
        [*GARRISON, "mock-upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], *, timeout: float) -> None:
    """Stop each process still running as an operator would (SIGINT: a clean stop), after a
    SIGCONT in case a failed step left it stopped; one that has not ended within
    ``timeout`` seconds is killed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
