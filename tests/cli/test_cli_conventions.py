"""What every command shares: global options before or after the command, one exit-code
table, validation errors in the user's terms, tables that never cut an id, people by name,
and `serve`/`demo` that say where they are (or which port is taken) in one line."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console

from garrison.cli import output
from garrison.cli.exits import ExitCode, for_status
from garrison.cli.wording import duration_words, humane
from tests.cli.conftest import GARRISON, Served, cli_env, garrison

pytestmark = pytest.mark.e2e


# ── global options ─────────────────────────────────────────────────────────────────────────
def test_config_is_accepted_before_the_command(served: Served) -> None:
    out = garrison("--config", str(served.config), "whoami", url=served.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("admin (prn_")


def test_config_after_the_command_wins_over_the_one_before(served: Served) -> None:
    out = garrison(
        "--config",
        "/nowhere/garrison.toml",
        "whoami",
        "--config",
        str(served.config),
        url=served.url,
    )
    assert out.returncode == 0, out.stderr


# ── exit codes ─────────────────────────────────────────────────────────────────────────────
def test_exit_codes_follow_the_table(served: Served) -> None:
    assert served.run("user", "show", "ghost").returncode == ExitCode.NOT_FOUND
    served.ok("org", "add", "research")
    assert served.run("org", "add", "research").returncode == ExitCode.CONFLICT
    nobody = served.make_principal("nobody")
    out = served.run("org", "list", env={"GARRISON_ADMIN_KEY": nobody})
    assert out.returncode == ExitCode.REFUSED, out.stderr
    out = served.run("whoami", env={"GARRISON_ADMIN_URL": "http://127.0.0.1:9"})
    assert out.returncode == ExitCode.FAILED
    out = served.run("key", "create", "admin", "--expires-in", "100d")
    assert out.returncode == ExitCode.USAGE
    assert served.run("user", "add").returncode == ExitCode.USAGE  # click: missing argument


def test_status_codes_map_to_exit_codes() -> None:
    assert [for_status(s) for s in (400, 401, 403, 404, 409, 413, 500, 503, 0)] == [
        ExitCode.USAGE,
        ExitCode.REFUSED,
        ExitCode.REFUSED,
        ExitCode.NOT_FOUND,
        ExitCode.CONFLICT,
        ExitCode.USAGE,
        ExitCode.FAILED,
        ExitCode.FAILED,
        ExitCode.FAILED,
    ]


def test_audit_verify_says_verified_or_could_not_read(served: Served, tmp_path: Path) -> None:
    assert served.run("audit", "verify").returncode == 0
    moved = tmp_path / "elsewhere.toml"
    text = served.config.read_text().replace(str(served.db_path), str(tmp_path / "gone.db"))
    moved.write_text(text)
    out = garrison("audit", "verify", "--config", str(moved), url=None)
    assert out.returncode == ExitCode.FAILED, (out.stdout, out.stderr)
    assert out.stderr.strip().splitlines() == [
        f"error: could not read the audit log: no audit database at {tmp_path / 'gone.db'}"
    ]


def test_local_audit_commands_follow_the_table_too(served: Served, tmp_path: Path) -> None:
    err = served.refused("audit", "prove", "req_nobody", code=ExitCode.NOT_FOUND)
    assert err == "error: no audit event 'req_nobody'"
    junk = tmp_path / "junk.json"
    junk.write_text("[1]")
    out = garrison("audit", "verify-proof", str(junk), "--pubkey", "x", url=None)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert out.stderr.strip().splitlines() == [f"error: {junk} is not a proof file"]


# ── validation in the user's terms ─────────────────────────────────────────────────────────
def test_a_key_lifetime_over_the_limit_is_said_in_days(served: Served) -> None:
    err = served.refused("key", "create", "admin", "--expires-in", "100d", code=ExitCode.USAGE)
    assert err == "error: --expires-in: at most 90 days"


def test_an_incident_start_out_of_bounds_names_the_option(served: Served) -> None:
    err = served.refused("incident", "open", "--title", "t", "--since", "1999-01-01")
    assert err.startswith("error: --since: must be between 2000-01-01")


def test_wording_of_server_messages() -> None:
    assert humane("grace_s: Input should be less than or equal to 86400") == (
        "--grace: at most 1 day"
    )
    assert humane("reason: String should have at most 200 characters") == (
        "--reason: at most 200 characters"
    )
    assert humane("level: Input should be 'public' or 'internal'") == (
        "--level: one of public, internal"
    )
    assert humane("org 'x' does not exist") == "org 'x' does not exist"
    assert duration_words(28800) == "8 hours"
    assert duration_words(90) == "90 seconds"


# ── tables ─────────────────────────────────────────────────────────────────────────────────
def test_piped_tables_are_plain_and_keep_every_id_whole(served: Served) -> None:
    # Admins make keys for service accounts only (rule own-credential).
    served.ok("service", "add", "table-bot", "--org", "internal")
    served.ok("key", "create", "table-bot", "--note", "n" * 120)
    keys = served.as_json("key", "list")
    out = served.ok("key", "list", env={"COLUMNS": "60"})
    assert "│" not in out and "…" not in out
    for key in keys:
        assert key["id"] in out
    assert out.splitlines()[0].split()[0] == "id"


def test_terminal_tables_drop_columns_before_they_cut_an_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(
        output, "console", Console(file=screen, force_terminal=True, width=50, color_system=None)
    )
    change = "chg_310b8f0e2a4c4d6e9f1a3b5c7d9e0f12"
    rows = [{"id": change, "kind": "policy-set", "summary": "s" * 80, "note": "x" * 40}]
    output.table(rows, ["id", "kind", "summary", "note"], False, "Changes")
    text = screen.getvalue()
    assert change in text  # whole, on one line
    assert "…" not in text
    assert "not shown for width: " in text


# ── names where names belong ───────────────────────────────────────────────────────────────
def test_locks_incidents_and_the_audit_tail_show_people_by_name(served: Served) -> None:
    served.make_principal("bob")
    served.ok("lock", "principal", "bob", "--reason", "leaked")
    served.ok("incident", "open", "--title", "leak", "--principal", "bob")
    locks = served.ok("locks")
    incidents = served.ok("incident", "list")
    for out in (locks, incidents):
        assert "admin" in out
        assert "prn_" not in out
    time.sleep(0.3)  # the lock's event is committed by the writer
    tail = served.ok("audit", "tail", "-n", "5")
    assert "admin" in tail
    assert "prn_" not in tail


# ── serve and demo ─────────────────────────────────────────────────────────────────────────
def _taken_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_taken_port_is_one_line_naming_the_port_and_the_option(
    served: Served, command: str
) -> None:
    holder = _taken_port()
    port = holder.getsockname()[1]
    try:
        args = ["serve", "--config", str(served.config)] if command == "serve" else ["demo"]
        out = garrison(*args, "--port", str(port), url=None)
    finally:
        holder.close()
    assert out.returncode == ExitCode.USAGE, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} is already in use: choose another with --port")


def test_serve_says_where_it_listens_and_what_it_writes(served: Served) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [*GARRISON, "serve", "--config", str(served.config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(None),
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(4)]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes both pipes
    assert lines[0] == f"garrison listening on http://127.0.0.1:{port}"
    assert lines[1] == f"database:  sqlite:///{served.db_path}"
    assert lines[2].startswith("audit:     fail closed")
    assert lines[3] == f"admin key: {served.data_dir / 'admin.key'} (the CLI reads it from there)"
