"""The files in deploy/: the systemd unit verifies, and the container's build steps install a
garrison that runs, in a plain venv (no container runtime needed)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "garrison.service"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # The unit names the installed path; point it at this checkout's garrison to verify it.
    garrison = Path(sys.executable).parent / "garrison"
    unit = tmp_path / "garrison.service"
    unit.write_text(UNIT.read_text().replace("/opt/garrison/bin/garrison", str(garrison)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_the_systemd_unit_is_hardened() -> None:
    s = _unit_settings()
    assert s["User"] == ["garrison"] and s["NoNewPrivileges"] == ["true"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"] == ["/var/lib/garrison"]  # the only writable path
    assert s["CapabilityBoundingSet"] == [""]
    assert s["KillSignal"] == ["SIGTERM"]
    # The drain deadline (20 s) and the final checkpoint fit before systemd's SIGKILL.
    assert int(s["TimeoutStopSec"][0]) > 20


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, argument) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


def test_the_container_runs_as_a_user_with_one_writable_volume() -> None:
    steps = _dockerfile()
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    assert ("USER", "garrison") in final
    assert ("VOLUME", '["/data"]') in final
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert ("ENTRYPOINT", '["garrison"]') in final


def test_the_container_build_steps_install_a_working_garrison(tmp_path: Path) -> None:
    """The build stage's RUN step, run as written with /opt/garrison and /src mapped to a
    scratch venv and this checkout (needs PyPI, like the image build)."""
    steps = _dockerfile()
    build = steps[: [i for i, (w, _) in enumerate(steps) if w == "FROM"][1]]
    (run,) = [arg for word, arg in build if word == "RUN"]
    venv = tmp_path / "opt-garrison"
    script = run.replace("/opt/garrison", str(venv)).replace(
        "python -m venv", f"{sys.executable} -m venv"
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    help_out = subprocess.run(
        [str(venv / "bin" / "garrison"), "--help"], capture_output=True, text=True, check=False
    )
    assert help_out.returncode == 0 and "serve" in help_out.stdout, help_out.stderr
    assert shlex.split(run)[0] == "python"
    assert "--require-hashes -r requirements/run.txt" in run  # the lock, as make run uses it
