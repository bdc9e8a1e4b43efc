"""The ``garrison`` command end to end: init, serve, directory commands through the admin
API of the running gateway, a real client call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.cli.conftest import Served

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
UPSTREAM_SECRET = "sk-cli-upstream-SECRET-42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without GARRISON_* settings (they would override the config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    return {**env, **(extra or {})}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(env),
        check=False,
    )


# Longest a started process may take to answer HTTP (a process that exits fails at once):
# it imports and opens its database in ~2 s of CPU, which a loaded machine stretched past
# 15 s.
STARTUP_WITHIN_S = 60.0
# Longest a process may take to stop after Ctrl-C (a drain with nothing in flight ends at
# once; a loaded CI runner has stalled an exit for over 15 s).
STOP_WITHIN_S = 60.0


def _wait_http(url: str, proc: subprocess.Popen[str], timeout: float = STARTUP_WITHIN_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)  # also closes the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_init_serve_and_call_through_the_cli(
    tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    config = str(data / "garrison.toml")
    port = _free_port()
    out = run("init", "--data-dir", str(data), "--port", str(port))
    assert out.returncode == 0, out.stderr
    # One admin only: allowed, with a loud warning; a code is printed, never a key.
    assert "WARNING: only one admin" in out.stderr
    assert "gk_" not in out.stdout + out.stderr
    (code,) = [line.split()[-1] for line in out.stdout.splitlines() if "admin: ge_" in line]
    credential = data / "admin.key"
    assert not credential.exists()  # nothing for the operator to hand on but the code
    for path in (data / "keys" / "pepper.key", data / "keys" / "seal.keys", data / "garrison.toml"):
        assert path.stat().st_mode & 0o077 == 0, path

    up_port = _free_port()
    mock = subprocess.Popen(
        [*GARRISON, "mock-upstream", "--port", str(up_port)],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    background.append(mock)
    _wait_http(f"http://127.0.0.1:{up_port}/v1/models", mock)
    serve = subprocess.Popen(
        [*GARRISON, "-v", "serve", "--config", config],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    background.append(serve)
    _wait_http(f"http://127.0.0.1:{port}/healthz", serve)
    enrolled = run("enroll", code, "--save", "--config", config)
    assert enrolled.returncode == 0, enrolled.stderr
    assert credential.stat().st_mode & 0o777 == 0o600
    admin_key = credential.read_text().strip()
    assert admin_key.startswith("gk_")
    assert admin_key not in enrolled.stdout + enrolled.stderr  # written to the file only
    assert str(credential) in enrolled.stdout
    again = run("enroll", code, "--save", "--config", config)
    assert again.returncode == 3 and "not valid" in again.stderr  # single use: refused (3)

    # The directory commands drive the admin API of `garrison serve`: its address comes from
    # the config's [gateway] section, the key from the config's [admin] credential_file.
    outputs: list[str] = []

    def cli(*args: str, env: dict[str, str] | None = None) -> str:
        r = run(*args, "--config", config, env=env)
        assert r.returncode == 0, r.stderr
        outputs.extend((r.stdout, r.stderr))
        return r.stdout

    me = cli("whoami")
    assert me.startswith("admin (prn_") and "roles: security-admin" in me
    cli(
        "vendor",
        "add",
        "acme-vendor",
        "--sponsor",
        "admin",
        "--contract-end",
        "2099-01-01",
        "--network",
        "127.0.0.0/8",
        "--seats",
        "3",
        "--ceiling",
        "internal",
        "--agreement",
        "MSA-7",
    )
    cli("vendor", "activate", "acme-vendor")
    invited = cli("user", "add", "erin", "--org", "acme-vendor", "--clearance", "internal")
    (erin_code,) = [w for w in invited.split() if w.startswith("ge_")]
    cli(
        "model",
        "add",
        "assistant",
        "--upstream-url",
        f"http://127.0.0.1:{up_port}/v1",
        "--upstream-model",
        "mock-small",
        "--upstream-key-env",
        "UPSTREAM_KEY",
        env={"UPSTREAM_KEY": UPSTREAM_SECRET},
    )
    # erin enrolls from her own machine (127.0.2.1 plays it): the key is hers alone.
    created = json.loads(
        cli(
            "enroll",
            erin_code,
            "--expires-in",
            "1d",
            "--network",
            "127.0.0.0/8",
            "--json",
            env={"GARRISON_SOURCE_ADDRESS": "127.0.2.1"},
        )
    )
    shown_once = len(outputs)
    listing = cli("key", "list", "--json")
    assert created["key"] not in listing  # shown once, then only the id
    assert created["id"] in listing
    models = cli("model", "list", "--json")
    assert UPSTREAM_SECRET not in models
    assert json.loads(models)[0]["upstream_key"] == "sealed"

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=created["key"], max_retries=0
    )
    with client:
        reply = client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hello"}]
        )
    assert reply.choices[0].message.content
    # The call's audit record is written behind the answer: wait for it to be counted.
    deadline = time.monotonic() + 10
    while True:
        report = json.loads(cli("vendor", "show", "acme-vendor", "--json"))
        (key_row,) = report["principals"][0]["keys"]
        if key_row["last_used"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert report["seats_used"] == 1 and report["terms"]["status"] == "active"
    assert key_row["id"] == created["id"] and key_row["sources"] == ["127.0.0.1"]
    serve.send_signal(signal.SIGINT)
    _, err = serve.communicate(timeout=STOP_WITHIN_S)
    for secret in (admin_key, created["key"], UPSTREAM_SECRET):
        assert secret not in err
    for secret in (admin_key, UPSTREAM_SECRET):
        assert not [o for o in outputs if secret in o]
    assert not [o for o in outputs[shown_once:] if created["key"] in o]


def test_bad_input_gives_one_clean_line_and_exit_2(served: Served) -> None:
    err = served.refused("user", "add", "x", "--org", "no-such-org")
    assert "org 'no-such-org' does not exist" in err
    err = served.refused("key", "create", "admin", "--network", "300.1.1.1/8")
    assert "invalid network" in err


def test_init_refuses_to_run_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", "--data-dir", str(data)).returncode == 0
    again = run("init", "--data-dir", str(data))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_demo_runs_the_two_person_flow_and_its_snippet_runs_as_pasted(tmp_path: Path) -> None:
    """`garrison demo`: two admins enroll, a contractor's request for the critical model is
    approved by two people and the call succeeds, all through the admin API; then the
    printed "Try it" snippet and the admin commands run exactly as printed."""
    import os

    port = _free_port()
    log = tmp_path / "demo.out"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*GARRISON, "demo", "--port", str(port), "--data-dir", str(tmp_path / "demo")],
            text=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_env({"PYTHONUNBUFFERED": "1"}),
        )
    out = ""
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C to stop." not in out:
            assert time.monotonic() < deadline, out
            assert proc.poll() is None, out
            time.sleep(0.5)
            out = log.read_text()
        assert "bob's call to 'oracle' succeeded" in out
        bob_key = next(line.split()[-1] for line in out.splitlines() if "critical grant" in line)
        assert bob_key.startswith("gk_")
        # Everything after the "Try it" line, exactly as printed; run in a shell whose PATH
        # does not have the venv (a new user's, after `make run`).
        start = out.index("\n", out.index("Try it ("))
        snippet = out[start : out.index("Ctrl-C to stop.")]
        bin_dir = str(Path(sys.executable).parent)
        outside = [p for p in os.environ.get("PATH", "").split(":") if p and p != bin_dir]
        env = {**_env(), "PATH": ":".join(outside) or "/usr/bin:/bin"}
        env = {k: v for k, v in env.items() if not k.startswith("GARRISON_")}
        ran = subprocess.run(
            ["bash", "-e", "-c", snippet], capture_output=True, text=True, env=env, timeout=120
        )
        assert ran.returncode == 0, (ran.stdout, ran.stderr)
        assert "'oracle'" in ran.stdout and "NotFoundError" in ran.stdout
        assert "ana (" in ran.stdout and "provenance enrolled" in ran.stdout
        assert "Traceback" not in ran.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=STOP_WITHIN_S)
    assert proc.returncode == 0
