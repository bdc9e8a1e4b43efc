"""Review fixes in detection, response and rendering:

* 6 — the ``Monitor``: one event failing does not skip the rest of its batch, and an alert
  that could not be stored leaves no dedup state behind (the next finding is new again);
  playbooks catch any exception per action (the others still run);
* 10 — Markdown report cells carry no control characters (no \\r to split a row, no ESC for
  a terminal to obey) and escape HTML; an unknown model name is kept printable only;
* 12 — a live call whose key expires mid-stream is cut (``credential.expired``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.audit.events import AuditEvent, EventName
from garrison.bootstrap import Initialized, init, open_directory
from garrison.detect.engine import Verdict
from garrison.detect.observation import Finding, Severity
from garrison.detect.rules import Playbook
from garrison.domain import Level, PrincipalKind
from garrison.domain.locks import LockKind
from garrison.keyring import Sealer
from garrison.respond import monitor as monitor_mod
from garrison.respond import playbooks
from garrison.respond.monitor import Monitor
from garrison.respond.render import to_html, to_markdown
from garrison.store import Directory, alerts, load_snapshot
from tests.support.db import connect
from tests.support.world import World

GUARD_S = 10.0


def _db_path(initialized: Initialized) -> Path:
    return Path(initialized.settings.database_url.removeprefix("sqlite:///"))


def alert_rows(d: Directory) -> list[dict[str, Any]]:
    conn = connect(d)
    try:
        cols = ("rule_id", "subject_id", "count", "status")
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM alerts ORDER BY seq").fetchall()  # noqa: S608
    finally:
        conn.close()
    return [dict(zip(cols, r, strict=True)) for r in rows]


# ── 6: the monitor ─────────────────────────────────────────────────────────────────────────
@dataclass
class Env:
    initialized: Initialized
    d: Directory

    def directory_for(self, actor: str) -> Directory:
        return open_directory(self.initialized.settings, engine=self.d.engine, actor=actor)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    initialized = init(tmp_path / "data")
    d = open_directory(initialized.settings, actor="test")
    d.create_principal(
        "vic", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=time.time()
    )
    try:
        yield Env(initialized, d)
    finally:
        d.engine.dispose()


def out_of_network(key_id: str, at: float) -> AuditEvent:
    """A refusal the built-in ``key-out-of-network`` rule turns into a finding about ``key_id``
    (high: its playbook only notifies)."""
    return AuditEvent(
        EventName.REQUEST_DENIED,
        at=at,
        request_id=f"req-{key_id}",
        data={
            "status": 403,
            "reasons": ["credential.network_not_allowed"],
            "presented_key_id": key_id,
            "client_address": "10.1.2.3",
        },
    )


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {GUARD_S} s")
        time.sleep(0.01)


def test_a_failed_alert_skips_nothing_and_leaves_no_dedup_state(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealer = Sealer.from_dir(env.initialized.settings.key_dir)
    snapshot = load_snapshot(env.d.engine, sealer)
    monitor = Monitor(
        engine=env.d.engine,
        db_path=_db_path(env.initialized),
        directory_for=env.directory_for,
        facts=lambda: snapshot,
        after_write=lambda: None,
    )
    original = alerts.record
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def record_failing_once(d: Directory, verdict: Verdict, *, now: float) -> tuple[str, bool]:
        with lock:
            seen.append((verdict.finding.subject_id, verdict.new))
            first = len(seen) == 1
        if first:
            raise RuntimeError("disk full")
        return original(d, verdict, now=now)

    monkeypatch.setattr(alerts, "record", record_failing_once)
    monitor.start()
    try:
        at = time.time()
        # One batch: k1 (its alert fails to store), k2, then k1 again at the same instant.
        batch = [out_of_network("k1", at), out_of_network("k2", at), out_of_network("k1", at)]
        monitor.observe(1000, batch)
        wait_for(lambda: len(alert_rows(env.d)) == 2, "two alerts stored")
        wait_for(lambda: monitor.processed == 3, "every event of the batch processed")
    finally:
        monitor.stop()
    # The event after the failure was not skipped, and the repeat of the failed finding was
    # judged new (no dedup state was kept for an alert that was never stored).
    assert seen == [("k1", True), ("k2", True), ("k1", True)]
    assert [(a["rule_id"], a["subject_id"], a["count"]) for a in alert_rows(env.d)] == [
        ("key-out-of-network", "k2", 1),
        ("key-out-of-network", "k1", 1),
    ]
    # And the stored one deduplicates as before.
    assert (
        monitor.engine.judge(
            Finding(
                rule_id="key-out-of-network",
                title="t",
                severity=Severity.HIGH,
                subject_kind="credential",
                subject_id="k1",
                reason="credential.out_of_network",
                at=at + 1,
            )
        ).new
        is False
    )


@pytest.mark.parametrize("fail_first", [False, True], ids=["all-stored", "first-fails"])
def test_a_failed_alert_skips_nothing_when_a_gap_is_read_back(
    env: Env, monkeypatch: pytest.MonkeyPatch, fail_first: bool
) -> None:
    """A batch the queue had no room for is read back from the log (catching up): one of its
    events failing must not lose the rest of it either. (``all-stored`` shows the gap is
    read back at all.)"""
    at = time.time()
    for key in ("k1", "k2", "k3"):
        event = out_of_network(key, at)
        env.d.record_event(event.name, now=at, data=event.data)
    conn = connect(env.d)
    try:
        (last_seq,) = conn.execute("SELECT max(seq) FROM audit_events").fetchone()
    finally:
        conn.close()
    start = int(last_seq) - 3  # the leaf indices of the three refusals: start .. start + 2

    monkeypatch.setattr(monitor_mod, "DETECT_QUEUE_BATCHES", 1)
    sealer = Sealer.from_dir(env.initialized.settings.key_dir)
    snapshot = load_snapshot(env.d.engine, sealer)
    monitor = Monitor(
        engine=env.d.engine,
        db_path=_db_path(env.initialized),
        directory_for=env.directory_for,
        facts=lambda: snapshot,
        after_write=lambda: None,
    )
    original = alerts.record
    seen: list[str] = []

    def record_failing_once(d: Directory, verdict: Verdict, *, now: float) -> tuple[str, bool]:
        seen.append(verdict.finding.subject_id)
        if fail_first and len(seen) == 1:
            raise RuntimeError("disk full")
        return original(d, verdict, now=now)

    monkeypatch.setattr(alerts, "record", record_failing_once)
    monitor.observe(0, [])  # fills the queue (one batch)...
    monitor.observe(start, [out_of_network(k, at) for k in ("k1", "k2", "k3")])  # ...a gap
    assert monitor.dropped == 3
    monitor.start()
    try:
        deadline = time.monotonic() + 3.0
        while len(alert_rows(env.d)) < 3 - fail_first and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        monitor.stop()
    assert seen[:1] == ["k1"]
    expected = ["k2", "k3"] if fail_first else ["k1", "k2", "k3"]
    assert sorted(a["subject_id"] for a in alert_rows(env.d)) == expected


# ── 6: playbooks catch any exception per action ────────────────────────────────────────────
ALL_ACTIONS = Playbook(
    id="everything",
    rule=None,
    min_severity=None,
    actions=("lock_credential", "lock_principal", "open_incident", "notify"),
)


@dataclass
class Scene:
    env: Env
    finding: Finding
    alert_id: str
    key_id: str
    principal_id: str
    enforced: list[int]

    def run(self) -> playbooks.Outcome:
        sealer = Sealer.from_dir(self.env.initialized.settings.key_dir)
        return playbooks.run(
            (ALL_ACTIONS,),
            self.finding,
            self.alert_id,
            load_snapshot(self.env.d.engine, sealer),
            self.env.directory_for,
            time.time,
            lambda: self.enforced.append(1),
        )


@pytest.fixture
def scene(env: Env) -> Scene:
    now = time.time()
    created = env.d.create_key("vic", now=now)
    finding = Finding(
        rule_id="test-rule",
        title="A test finding",
        severity=Severity.HIGH,
        subject_kind="credential",
        subject_id=created.key.key_id,
        reason="test",
        at=now,
        principal_id=created.principal_id,
        credential_id=created.key.key_id,
    )
    verdict = Verdict(finding, f"test-rule|credential|{created.key.key_id}", True)
    alert_id, new = alerts.record(env.directory_for("detector:test-rule"), verdict, now=now)
    assert new
    return Scene(env, finding, alert_id, created.key.key_id, created.principal_id, [])


def test_an_unexpected_exception_in_one_lock_action_does_not_stop_the_others(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Directory.create_lock

    def create_lock(self: Directory, kind: LockKind, ref: str, **kw: Any) -> dict[str, Any]:
        if kind is LockKind.CREDENTIAL:
            raise RuntimeError("database at /srv/secret/path is gone")
        return original(self, kind, ref, **kw)

    monkeypatch.setattr(Directory, "create_lock", create_lock)
    outcome = scene.run()
    by_action = {a["action"]: a for a in outcome.actions}
    assert set(by_action) == {"lock_credential", "lock_principal", "open_incident"}
    # The failure is named by its type only (no message from deep inside leaks out).
    assert by_action["lock_credential"]["error"] == "RuntimeError"
    assert by_action["lock_principal"]["lock_id"]
    assert by_action["lock_principal"]["target"] == scene.principal_id
    assert by_action["open_incident"]["incident_id"]
    assert outcome.locked and outcome.notify
    assert scene.enforced == [1]


def test_an_unexpected_exception_opening_the_incident_is_recorded(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    def open_incident(self: Directory, title: str, **kw: Any) -> str:
        raise KeyError("boom")

    monkeypatch.setattr(Directory, "open_incident", open_incident)
    outcome = scene.run()
    by_action = {a["action"]: a for a in outcome.actions}
    assert by_action["open_incident"]["error"] == "KeyError"
    assert by_action["lock_credential"]["lock_id"] and by_action["lock_principal"]["lock_id"]
    # What was done is on the alert.
    conn = connect(scene.env.d)
    try:
        (stored,) = conn.execute(
            "SELECT actions FROM alerts WHERE id = ?", (scene.alert_id,)
        ).fetchone()
    finally:
        conn.close()
    assert [a["action"] for a in orjson.loads(stored)] == [
        "lock_credential",
        "lock_principal",
        "open_incident",
    ]


def test_an_unexpected_exception_recording_an_action_does_not_escape(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    def update(*args: Any, **kw: Any) -> dict[str, Any]:
        raise OSError("read-only file system")

    monkeypatch.setattr(alerts, "update", update)
    outcome = scene.run()
    assert {a["action"] for a in outcome.actions} == {
        "lock_credential",
        "lock_principal",
        "open_incident",
    }
    assert outcome.locked


# ── 10: report cells ───────────────────────────────────────────────────────────────────────
def _report(text: str) -> dict[str, Any]:
    """A report whose every caller-supplied field holds ``text``."""
    return {
        "incident": {
            "id": "inc_x",
            "title": f"title {text}",
            "status": "open",
            "opened_by": "me",
            "opened_at": 0.0,
            "since": 0.0,
            "subjects": {"vendors": ["v"], "principals": [], "credentials": []},
        },
        "principals": [f"p {text}"],
        "first_seen": None,
        "last_seen": None,
        "models": [
            {
                "model": f"model {text}",
                "calls": 1,
                "refused": 0,
                "tokens_in": 0,
                "tokens_out": 0,
                "first": 0.0,
                "last": 0.0,
            }
        ],
        "refusals": [{"model": f"model {text}", "reason": "model.unknown", "count": 1}],
        "sources": [],
        "others_from_same_sources": [],
        "credentials": [],
        "locks": [
            {
                "id": "lck_1",
                "kind": "vendor",
                "target": "v",
                "reason": f"reason {text}",
                "created_at": 0.0,
                "lifted_at": None,
            }
        ],
        "notes": [{"at": 0.0, "author": "me", "kind": "note", "text": f"note {text}"}],
        "events": 0,
        "timeline": [
            {
                "index": 0,
                "at": 0.0,
                "name": "request.denied",
                "principal_id": "prn_1",
                "credential_id": None,
                "model": f"model {text}",
                "client_address": "127.0.0.1",
                "status": 404,
                "reasons": ["model.unknown"],
            }
        ],
        "generated_at": 0.0,
    }


@pytest.mark.parametrize(
    "control",
    ["\r", "\x1b", "\x00", "\x07", "\x08", "\x0b", "\x0c", "\x7f"],
    ids=["CR", "ESC", "NUL", "BEL", "BS", "VT", "FF", "DEL"],
)
def test_markdown_holds_no_ascii_control_character(control: str) -> None:
    md = to_markdown(_report(f"a{control}[2Jb\nc"))
    assert control not in md
    assert [c for c in md if c != "\n" and unicodedata.category(c) == "Cc" and ord(c) < 0x80] == []
    # Every table row is still one line, starting and ending with its pipe.
    for line in md.split("\n"):
        if line.startswith("|"):
            assert line.endswith("|"), line


def test_markdown_holds_no_c1_control_character() -> None:
    # U+009B is CSI in its one-character form: a terminal may obey it like ESC [.
    md = to_markdown(_report("a\x9b2Jb\x85c"))
    assert [hex(ord(ch)) for ch in md if unicodedata.category(ch) == "Cc" and ch != "\n"] == []


def test_a_carriage_return_cannot_split_a_table_row() -> None:
    md = to_markdown(_report("x\r| injected | row |\ry"))
    assert "\r" not in md
    rows = [line for line in md.split("\n") if line.startswith("| ") and "note" in line]
    assert rows == ["| 1970-01-01 00:00:00Z | me | note | note x \\| injected \\| row \\| y |"]


def test_markdown_escapes_html() -> None:
    md = to_markdown(_report("<script>alert(1)</script> & <img src=x onerror=alert(2)>"))
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt;" in md
    assert md.startswith("# Incident inc_x: title &lt;script&gt;")


def test_plain_text_is_unchanged_in_markdown() -> None:
    md = to_markdown(_report("gpt-4o/mini v1.2 (eu)"))
    assert "| model gpt-4o/mini v1.2 (eu) | 1 | 0 |" in md


def test_html_rendering_is_unaffected_and_escaped() -> None:
    page = to_html(_report("<b>bold</b>"))
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


# ── 10: unknown model names kept printable only ────────────────────────────────────────────
async def _chat(world: World, key: str, model: str, *, stream: bool = False) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    session = aiohttp.ClientSession()
    try:
        resp = await session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps(body),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
    except BaseException:
        await session.close()
        raise
    return session, resp


@pytest.mark.e2e
async def test_an_unknown_model_name_is_recorded_printable_only(world: World) -> None:
    name = "ghost\x1b[31m\r\nred\u2028\x9b\x00end" + "z" * 300
    session, resp = await _chat(world, world.keys["carol"], name)
    async with session, resp:
        assert resp.status == 404
        request_id = resp.headers["x-request-id"]
        assert b"\x1b" not in await resp.read()
    await world.settle()
    (event,) = [e for e in world.events("request.denied") if e["request_id"] == request_id]
    assert event["data"]["reasons"] == ["model.unknown"]
    recorded = event["model"]
    assert recorded.startswith("ghost?[31m??red???end")
    assert recorded.isprintable()
    assert len(recorded) == 200
    # Printable text passes through as it is.
    session, resp = await _chat(world, world.keys["carol"], "no-such-model é/ü v2")
    async with session, resp:
        assert resp.status == 404
        request_id = resp.headers["x-request-id"]
    await world.settle()
    (event,) = [e for e in world.events("request.denied") if e["request_id"] == request_id]
    assert event["model"] == "no-such-model é/ü v2"


# ── 12: a key expiring mid-stream ──────────────────────────────────────────────────────────
@pytest.mark.e2e
async def test_a_stream_is_cut_when_its_key_expires(world: World) -> None:
    lifetime = 2.5
    created = world.directory.create_key("carol", now=time.time(), expires_in=lifetime)
    await world.reload()
    expires_at = created.expires_at
    session, resp = await _chat(world, created.key.token.reveal(), "m-slow-stream", stream=True)
    async with session, resp:
        assert resp.status == 200, await resp.read()
        request_id = resp.headers["x-request-id"]
        first = b""
        async with asyncio.timeout(GUARD_S):
            while first.count(b"\n\n") < 2:
                first += await resp.content.readany()
        assert time.time() < expires_at  # the answer began while the key was live
        async with asyncio.timeout(GUARD_S):
            rest = await resp.read()
        ended = time.time()
    assert ended >= expires_at
    assert ended - expires_at < 2.0  # the watcher re-checks live calls every tick (50 ms)
    assert b'"code":"forbidden"' in rest
    assert b"[DONE]" not in rest

    async def cut_recorded() -> list[dict[str, Any]]:
        await world.settle()
        return [e for e in world.events("request.completed") if e["request_id"] == request_id]

    async with asyncio.timeout(GUARD_S):
        while not (done := await cut_recorded()):
            await asyncio.sleep(0.05)
    (event,) = done
    assert event["data"]["outcome"] == "cut"
    assert event["data"]["status"] == 403
    assert event["data"]["reasons"] == ["credential.expired"]
    assert event["data"]["lock_id"] is None
    async with asyncio.timeout(GUARD_S):
        while request_id not in world.mock.cancelled_request_ids:
            await asyncio.sleep(0.02)


@pytest.mark.e2e
async def test_a_stream_on_a_key_that_does_not_expire_soon_is_not_cut(world: World) -> None:
    created = world.directory.create_key("carol", now=time.time(), expires_in=3600)
    await world.reload()
    session, resp = await _chat(world, created.key.token.reveal(), "m-slow-stream", stream=True)
    async with session, resp:
        assert resp.status == 200
        received = b""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            async with asyncio.timeout(GUARD_S):
                received += await resp.content.readany()
        assert b'"code":"forbidden"' not in received
        assert b"data: {" in received
