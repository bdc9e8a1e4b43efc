"""Approvers learn that something waits for them: requests and two-person proposals go out
through the alert sinks as ``approval.*`` events (never with a secret), and
``garrison approvals --follow`` shows them live.

A gateway runs for an ``init``-ed data directory with a JSON-lines alert sink; everything
under test is done through the CLI (and so the admin API), as the admin whose key it holds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from garrison.audit.payloads_access import AccessRequested
from garrison.audit.payloads_admin import ChangeProposed
from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.keyring import Sealer
from garrison.respond.approvals import (
    APPROVAL_BATCH,
    APPROVAL_TRACKED_MAX,
    EXPIRED,
    REQUESTED,
    ApprovalWatcher,
    Deadlines,
    notice_for,
    scrub_summary,
)
from garrison.store.changes import CHANGE_TTL_S
from tests.cli.conftest import GARRISON, Served, cli_env, served_gateway

pytestmark = pytest.mark.e2e

UPSTREAM_SECRET = "sk-proposal-SECRET-abcdef0123456789"
WAIT_S = 15.0
# Longest a follower may take to end after Ctrl-C. It ends at once here; a loaded CI runner
# has stalled a process's exit (imports, disk) for over 15 s, which is not what this checks.
STOP_WITHIN_S = 60.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The CLI fixture's gateway, with alerts going to a JSON-lines file."""
    yield from served_gateway(
        tmp_path / "data", alerts_jsonl=str(tmp_path / "alerts.jsonl"), metrics_listen=None
    )


def sink_lines(served: Served) -> list[dict[str, Any]]:
    path = Path(str(served.settings.alerts_jsonl))
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def wait_for_notice(served: Served, kind: str, item_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for line in sink_lines(served):
            if line.get("kind") == kind and line["item"]["id"] == item_id:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no {kind} for {item_id} within {WAIT_S} s: {sink_lines(served)}")


def as_(key: str, **more: str) -> dict[str, str | None]:
    return {"GARRISON_ADMIN_KEY": key, **more}


def propose_model(served: Served, name: str = "oracle") -> str:
    """One admin (the first) adds a restricted model with an upstream credential: a proposal."""
    out = served.ok(
        "model", "add", name,
        "--upstream-url", "http://127.0.0.1:9/v1",
        "--level", "restricted", "--upstream-key-env", "UPKEY",
        env={"UPKEY": UPSTREAM_SECRET},
    )  # fmt: skip
    found = re.search(r"chg_[0-9a-f]+", out)
    assert found, out
    return found.group(0)


def test_a_proposal_by_one_admin_reaches_the_jsonl_sink_without_secrets(served: Served) -> None:
    change_id = propose_model(served)
    notice = wait_for_notice(served, REQUESTED, change_id)
    assert notice["waiting"] is True
    assert notice["item"]["type"] == "change"
    assert notice["item"]["kind"] == "model-create"
    assert notice["item"]["target"] == "oracle"
    assert notice["by"]["name"] == "admin"
    assert notice["at"].endswith("Z") and notice["expires_at"].endswith("Z")
    # Neither the credential nor its sealed form reaches the sink.
    ((payload,),) = served.query("SELECT payload FROM pending_changes WHERE id = ?", change_id)
    sealed = orjson.loads(payload)["upstream_key_sealed"]
    assert Sealer.from_dir(served.settings.key_dir).unseal(sealed.encode()).reveal() == (
        UPSTREAM_SECRET
    )
    text = Path(str(served.settings.alerts_jsonl)).read_text()
    for secret in (UPSTREAM_SECRET, sealed):
        assert secret not in text


def test_a_denied_proposal_goes_out_as_rejected(served: Served) -> None:
    second = served.make_principal("sec-2", roles=("security-admin",))
    change_id = propose_model(served)
    wait_for_notice(served, REQUESTED, change_id)
    served.ok("change", "deny", change_id, env=as_(second))
    notice = wait_for_notice(served, "approval.rejected", change_id)
    assert notice["by"]["name"] == "sec-2" and notice["waiting"] is False


def test_access_requests_go_out_requested_then_approved(served: Served) -> None:
    served.directory.create_model(
        "vault",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.CRITICAL,
        now=time.time(),
    )
    served.sync()
    ivan = served.make_principal("ivan", clearance=Level.CRITICAL)
    appr_1 = served.make_principal("appr-1", roles=("approver",))
    out = served.ok(
        "access", "request", "--model", "vault", "--for", "1h", "--reason", "INC-9 triage",
        env=as_(ivan),
    )  # fmt: skip
    request_id = out.split(":")[0]
    notice = wait_for_notice(served, REQUESTED, request_id)
    item = notice["item"]
    assert (item["type"], item["model"], item["reason"]) == ("access", "vault", "INC-9 triage")
    assert item["principal"]["name"] == "ivan" and item["approvals_needed"] == 2
    served.ok("access", "approve", request_id, env=as_(appr_1))
    approved = wait_for_notice(served, "approval.approved", request_id)
    assert approved["waiting"] is True and approved["item"]["approvals"] == 1
    assert approved["by"]["name"] == "appr-1"


def test_follow_prints_a_waiting_proposal_and_stops_after_its_time(served: Served) -> None:
    second = served.make_principal("sec-2", roles=("security-admin",))
    change_id = propose_model(served)
    started = time.monotonic()
    out = served.ok(
        "approvals", "--follow", "--for", "1s", "--interval", "0.2", "--json", env=as_(second)
    )
    assert time.monotonic() - started < 20
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["item"]["id"]) for e in lines] == [("waiting", change_id)]
    assert lines[0]["at"].endswith("Z")
    assert UPSTREAM_SECRET not in out


def test_follow_shows_a_proposal_made_while_it_runs_and_ends_cleanly_on_ctrl_c(
    served: Served,
) -> None:
    second = served.make_principal("sec-2", roles=("security-admin",))
    env = cli_env(served.url, as_(second))
    proc = subprocess.Popen(
        [*GARRISON, "approvals", "--follow", "--interval", "0.2", "--config", str(served.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(1.0)  # it is running and has seen nothing yet
        change_id = propose_model(served)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the follow prints (or the timeout below)
        assert " waiting change " + change_id in line, line
        assert "model-create" in line
        served.ok("change", "deny", change_id, env=as_(second))
        gone = proc.stdout.readline()
        assert " gone " in gone and change_id in gone
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=STOP_WITHIN_S)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "Aborted" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_follow_for_is_refused_without_follow(served: Served) -> None:
    assert "only with --follow" in served.usage_error("approvals", "--for", "1m")


def test_a_proposal_nobody_decides_is_announced_as_expired(served: Served) -> None:
    sent: list[dict[str, Any]] = []

    class Capture:
        name = "capture"

        def send(self, alert: dict[str, Any]) -> None:
            sent.append(alert)

        def close(self) -> None:
            pass

    now = [time.time()]
    watcher = ApprovalWatcher(served.db_path, [Capture()], clock=lambda: now[0], poll_s=3600)
    watcher.start()
    try:
        change_id = propose_model(served)
        deadline = time.monotonic() + WAIT_S
        while not any(n["item"]["id"] == change_id for n in sent):
            assert time.monotonic() < deadline, "the proposal was not seen"
            watcher.poll()
        assert watcher.poll() == []
        now[0] = time.time() + CHANGE_TTL_S + 1
        (expired,) = watcher.poll()
        assert (expired["kind"], expired["item"]["id"]) == (EXPIRED, change_id)
        assert watcher.poll() == []  # announced once
    finally:
        watcher.stop()


# ── the pure parts ─────────────────────────────────────────────────────────────────────────
def test_notice_for_ignores_unrelated_events() -> None:
    record = {"name": "request.allowed", "at": 1.0, "actor": "prn_1", "data": {}}
    assert notice_for(record, {}) is None


def test_an_event_applying_a_change_is_its_approval() -> None:
    record = {
        "name": "model.created",
        "at": 0.0,
        "actor": "prn_2",
        "i": 7,
        "data": {"origin": {"change_id": "chg_1"}, "upstream_key": "sealed"},
    }
    notice = notice_for(record, {"prn_2": "bob"})
    assert notice == {
        "kind": "approval.approved",
        "item": {"type": "change", "id": "chg_1"},
        "by": {"id": "prn_2", "name": "bob"},
        "at": "1970-01-01T00:00:00.000Z",
        "waiting": False,
        "audit_index": 7,
    }


def test_summaries_lose_url_credentials_and_queries() -> None:
    text = "add model m at https://u:PASS@host.example/v1?key=K1: because"
    assert scrub_summary(text) == "add model m at https://host.example/v1?… because"
    assert "PASS" not in scrub_summary(text) and "K1" not in scrub_summary(text)


def test_deadlines_hold_at_most_their_limit() -> None:
    assert APPROVAL_TRACKED_MAX >= 1000
    deadlines = Deadlines(limit=3)
    for n in range(5):
        deadlines.track(f"chg_{n}", float(n), {"id": f"chg_{n}"})
    assert len(deadlines) == 3
    assert [item["id"] for _, item in deadlines.due(10.0)] == ["chg_2", "chg_3", "chg_4"]
    assert len(deadlines) == 0


# ── the watcher under load (an audit table of its own; only the columns it reads) ─────────
class Captured:
    name = "capture"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> None:
        self.sent.append(alert)

    def close(self) -> None:
        pass


def audit_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE audit_events (seq INTEGER PRIMARY KEY, name TEXT, record BLOB);"
        "CREATE TABLE principals (id TEXT, name TEXT);"
        "CREATE TABLE pending_changes (id TEXT, kind TEXT, target TEXT, status TEXT,"
        " expires_at REAL);"
        "CREATE TABLE access_requests (id TEXT, status TEXT, expires_at REAL);"
        "CREATE TABLE locks (id TEXT, kind TEXT, lifted_at REAL, lift_requested_at REAL);"
    )
    return conn


def append(conn: sqlite3.Connection, name: str, data: dict[str, Any]) -> None:
    record = {"name": name, "at": time.time(), "actor": "prn_a", "data": data}
    conn.execute(
        "INSERT INTO audit_events (name, record) VALUES (?, ?)", (name, orjson.dumps(record))
    )
    conn.commit()


def test_data_plane_traffic_never_leaves_the_watcher_behind(tmp_path: Path) -> None:
    conn = audit_db(tmp_path / "a.db")
    sink = Captured()
    watcher = ApprovalWatcher(tmp_path / "a.db", [sink], poll_s=3600)
    watcher.start()
    try:
        for _ in range(APPROVAL_BATCH * 3):
            append(conn, "request.completed", {"status": 200})
        proposed = ChangeProposed(change_id="chg_1", kind="k", target="t", summary="s")
        append(conn, "change.proposed", proposed.as_data())
        (notice,) = watcher.poll()  # one poll, however many calls came first
        assert (notice["kind"], notice["item"]["id"]) == (REQUESTED, "chg_1")
    finally:
        watcher.stop()
        conn.close()


def test_a_burst_of_proposals_is_read_a_batch_at_a_time_and_none_is_lost(
    tmp_path: Path,
) -> None:
    conn = audit_db(tmp_path / "a.db")
    sink = Captured()
    watcher = ApprovalWatcher(tmp_path / "a.db", [sink], poll_s=3600)
    watcher.start()
    try:
        total = APPROVAL_BATCH + 7
        for n in range(total):
            asked = AccessRequested(
                request_id=f"acr_{n}",
                model_id="mdl_1",
                duration_s=60.0,
                reason="r",
                approvals_needed=2,
            )
            append(conn, "access.requested", asked.as_data())
        assert len(watcher.poll()) == APPROVAL_BATCH
        assert len(watcher.poll()) == 7
        assert [n["item"]["id"] for n in sink.sent] == [f"acr_{n}" for n in range(total)]
    finally:
        watcher.stop()
        conn.close()


def test_a_lockdown_lift_is_a_two_person_request_for_approvers() -> None:
    asked = {"lock_id": "lck_1", "kind": "all", "target": "*", "reason": "over"}
    requested = notice_for({"name": "lock.lift_requested", "at": 0.0, "data": asked}, {})
    assert requested is not None
    assert (requested["kind"], requested["item"]["type"], requested["waiting"]) == (
        REQUESTED,
        "lock-lift",
        True,
    )
    lifted = {**asked, "requested_by": "prn_a"}
    approved = notice_for({"name": "lock.lifted", "at": 1.0, "data": lifted}, {})
    assert approved is not None and approved["kind"] == "approval.approved"
    # Lifting any other lock is one admin's act: no notice.
    assert notice_for({"name": "lock.lifted", "at": 1.0, "data": asked}, {}) is None
