"""A database that cannot be read at start: ``garrison serve`` says so in one line and exits
"failed" (6, docs/cli.md exit codes) — never a traceback, never serving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GARRISON = [sys.executable, "-m", "garrison.cli.main"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env["GARRISON_METRICS_LISTEN"] = ""
    return subprocess.run(
        [*GARRISON, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _damage(db: Path, how: str) -> None:
    if how == "pages overwritten":
        with db.open("r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 8192)
    elif how == "truncated":
        os.truncate(db, 100)
    else:  # "not a database"
        db.write_bytes(b"this is not an SQLite file\n" * 200)


@pytest.mark.parametrize("how", ["pages overwritten", "truncated", "not a database"])
def test_serve_on_a_damaged_database_is_one_line_and_exit_6(tmp_path: Path, how: str) -> None:
    data = tmp_path / "d"
    assert _run("init", "--data-dir", str(data)).returncode == 0
    _damage(data / "garrison.db", how)
    for leftover in ("garrison.db-wal", "garrison.db-shm"):
        (data / leftover).unlink(missing_ok=True)
    done = _run("serve", "--config", str(data / "garrison.toml"))
    assert done.returncode == 6, done.stderr
    assert "Traceback" not in done.stderr
    assert "the database cannot be read" in done.stderr
    assert "restore it from a backup" in done.stderr
