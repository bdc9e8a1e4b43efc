"""An incident, scripted against a running world, end to end: what the vendor's person did
(allowed calls from two addresses, streaming and not, models beyond reach, a wrong model
name, a key from the wrong network, a wrong secret, a call after containment), what others
did from the same addresses, then the incident opened over the admin API — and the report
must list exactly what the script produced, in JSON, Markdown and HTML (caller text escaped);
the evidence bundle must verify offline, in process and with ``garrison audit verify-proof``,
and fail once a record is altered. Also: rotating a vendor's keys, and who may do what."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from garrison.audit.checkpoint import Checkpoint, key_id_of, load_public_b64
from garrison.audit.merkle import ProofError
from garrison.audit.proofs import check_evidence_bundle
from garrison.config import CONFIG_FILE
from garrison.domain import VendorStatus
from garrison.respond.render import to_html, to_markdown
from tests.conftest import BACKENDS
from tests.support import db
from tests.support.admin import admin_call, make_admin, table_counts
from tests.support.world import World, world_on

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
MODULE = pytest.mark.asyncio(loop_scope="module")

# The script: bob (contractor-co) calls "assistant" N times from 127.0.0.1 (some streaming)
# and M times from 127.0.0.3, tries "cyber-model" K times, and one model that does not exist.
N_HOME, STREAMED_HOME = 4, 2
M_AWAY, STREAMED_AWAY = 3, 1
K_CYBER = 2
CYBER_REASONS = ("clearance.compartment", "clearance.level", "vendor.ceiling")
HOME, AWAY, ELSEWHERE = "127.0.0.1", "127.0.0.3", "127.0.0.4"

TITLE = "Key leak at contractor-co <img src=x onerror=alert(1)>"
NOTE = "<script>alert('pwned')</script> seen from 127.0.0.3"
LOCK_REASON = "containment <b>now</b>"


# ── calling the gateway ────────────────────────────────────────────────────────────────────
@dataclass
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.tokens_in += usage["prompt_tokens"]
        self.tokens_out += usage["completion_tokens"]


@dataclass
class Reply:
    status: int
    body: bytes
    request_id: str
    usage: dict[str, Any] | None = None


def _sse_usage(body: bytes) -> dict[str, Any] | None:
    usage = None
    for block in body.split(b"\n\n"):
        line = block.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = orjson.loads(line[len(b"data: ") :])
        if chunk.get("usage"):
            usage = chunk["usage"]
    return usage


async def chat(
    world: World, key: str, model: str, address: str, *, stream: bool = False, text: str = "hi"
) -> Reply:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            world.base + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        ) as resp,
    ):
        raw = await resp.read()
        reply = Reply(resp.status, raw, resp.headers.get("x-request-id", ""))
    if reply.status == 200:
        reply.usage = _sse_usage(raw) if stream else orjson.loads(raw)["usage"]
    return reply


def wrong_secret(key: str) -> str:
    """The same key id with another secret of the same length."""
    prefix, key_id, secret = key.split("_", 2)
    other = "".join("B" if c == "A" else "A" for c in secret)
    return f"{prefix}_{key_id}_{other}"


# ── reading the world back ─────────────────────────────────────────────────────────────────
def rows(world: World, sql: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of ``sql`` (``:name`` parameters), on either database."""
    return db.rows(world.directory, sql, **params)


def principal_id(world: World, name: str) -> str:
    return str(rows(world, "SELECT id FROM principals WHERE name = :name", name=name)[0]["id"])


def org_id(world: World, name: str) -> str:
    return str(rows(world, "SELECT id FROM orgs WHERE name = :name", name=name)[0]["id"])


def keys_of(world: World, name: str) -> list[dict[str, Any]]:
    return rows(
        world,
        "SELECT * FROM credentials WHERE principal_id = :p ORDER BY id",
        p=principal_id(world, name),
    )


# A key ending within this long of the renderings is waited out first (see ``_play``).
KEY_ENDING_S = 5.0


def key_id(token: str) -> str:
    return token.split("_")[1]


def expected_state(key: dict[str, Any], at: float) -> str:
    if key["revoked_at"] is not None:
        return "revoked"
    if key["expires_at"] is not None and key["expires_at"] <= at:
        return "expired"
    return "active"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GARRISON_CONFIG": ""},
        check=False,
    )


def load_keys(pubkey: Path) -> dict[str, Ed25519PublicKey]:
    return {kid: load_public_b64(v) for kid, v in orjson.loads(pubkey.read_bytes()).items()}


# ── the scene: the script, then the incident ───────────────────────────────────────────────
@dataclass
class Scene:
    world: World
    incident: str
    since: float
    t_first: float  # just before bob's first call
    t_last: float  # just after bob's last call
    bob: str
    usage: Usage
    lock: dict[str, Any]
    other_lock: dict[str, Any]
    report: dict[str, Any]
    md: str
    html: str
    evidence: dict[str, Any]
    pubkey: Path
    request_ids: dict[str, str] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scene]:
    """The same incident played on each database: the report's queries and the evidence's
    inclusion proofs read SQLite and PostgreSQL alike."""
    root = tmp_path_factory.mktemp("incident")
    # Detection off: the script counts exactly the events it makes (alerts would add theirs).
    async with world_on(request.param, root, detect=False) as world:
        yield await _play(world, root)


async def _play(world: World, root: Path) -> Scene:
    keys, admin = world.keys, world.admin_key
    since_dt = datetime.now(UTC)
    since = since_dt.timestamp()
    usage = Usage()
    ids: dict[str, str] = {}
    t_first = time.time()
    for i in range(N_HOME):
        reply = await chat(
            world, keys["bob"], "assistant", HOME, stream=i < STREAMED_HOME, text=f"home {i} x"
        )
        assert reply.status == 200, reply.body
        assert reply.usage is not None
        usage.add(reply.usage)
    for i in range(M_AWAY):
        reply = await chat(
            world,
            keys["bob"],
            "assistant",
            AWAY,
            stream=i < STREAMED_AWAY,
            text=f"away {i} with more words",
        )
        assert reply.status == 200, reply.body
        assert reply.usage is not None
        usage.add(reply.usage)
    for _ in range(K_CYBER):
        reply = await chat(world, keys["bob"], "cyber-model", HOME)
        assert reply.status == 404, reply.body
    reply = await chat(world, keys["bob"], "no-such-model", AWAY)
    assert reply.status == 404, reply.body
    # A key bound to 127.0.0.2 used from 127.0.0.1: refused before any model is looked at.
    reply = await chat(world, keys["bob-netbound"], "assistant", HOME)
    assert reply.status == 401, reply.body
    ids["netbound"] = reply.request_id
    # bob's key id with a wrong secret: does not authenticate, but names bob's key.
    reply = await chat(world, wrong_secret(keys["bob"]), "assistant", HOME)
    assert reply.status == 401, reply.body
    ids["bad_secret"] = reply.request_id
    t_last = time.time()
    # Others: carol from bob's second address, alice from his first, carol from elsewhere.
    for _ in range(2):
        assert (await chat(world, keys["carol"], "assistant", AWAY)).status == 200
    assert (await chat(world, keys["alice"], "assistant", HOME)).status == 200
    assert (await chat(world, keys["carol"], "assistant", ELSEWHERE)).status == 200
    await world.settle()

    status, opened = await admin_call(
        world,
        admin,
        "POST",
        "/incidents",
        {"title": TITLE, "since": since_dt.isoformat(), "vendors": ["contractor-co"]},
    )
    assert status == 201, opened
    assert opened["status"] == "open"
    incident = opened["id"]
    status, lock = await admin_call(
        world,
        admin,
        "POST",
        "/locks",
        {"kind": "vendor", "target": "contractor-co", "reason": LOCK_REASON, "incident": incident},
    )
    assert status == 201, lock
    # A lock on someone else, not linked to the incident: not in its report.
    status, other_lock = await admin_call(
        world, admin, "POST", "/locks", {"kind": "principal", "target": "carol", "reason": "x"}
    )
    assert status == 201, other_lock
    # After containment bob is refused.
    t_locked = time.time()
    reply = await chat(world, keys["bob"], "assistant", HOME)
    assert reply.status == 403, reply.body
    ids["locked"] = reply.request_id
    t_last = time.time()
    status, updated = await admin_call(
        world, admin, "PATCH", f"/incidents/{incident}", {"status": "contained", "note": NOTE}
    )
    assert status == 200, updated
    assert updated == {"incident_id": incident, "from": "open", "to": "contained", "note": NOTE}
    assert t_locked < t_last
    await world.settle()
    # A key of bob's that ends within seconds (the world's 1 s "bob-short") must not end
    # between the three renderings below, which are three calls: wait until it has ended,
    # so each shows it expired (a fast machine reached them inside its second).
    ending = [
        float(k["expires_at"])
        for k in keys_of(world, "bob")
        if k["expires_at"] is not None and float(k["expires_at"]) < time.time() + KEY_ENDING_S
    ]
    if ending:
        await asyncio.sleep(max(0.0, max(ending) - time.time() + 0.01))

    status, report = await admin_call(world, admin, "GET", f"/incidents/{incident}/report")
    assert status == 200, report
    status, md = await admin_call(
        world, admin, "GET", f"/incidents/{incident}/report", params={"format": "md"}
    )
    assert status == 200, md
    assert md["format"] == "md"
    status, html = await admin_call(
        world, admin, "GET", f"/incidents/{incident}/report", params={"format": "html"}
    )
    assert status == 200, html
    assert html["format"] == "html"
    status, evidence = await admin_call(world, admin, "GET", f"/incidents/{incident}/evidence")
    assert status == 200, evidence

    out = cli("audit", "pubkey", "--config", str(root / "data" / CONFIG_FILE))
    assert out.returncode == 0, out.stderr
    pubkey = root / "pubkey.json"
    pubkey.write_text(out.stdout)
    return Scene(
        world=world,
        incident=incident,
        since=since,
        t_first=t_first,
        t_last=t_last,
        bob=principal_id(world, "bob"),
        usage=usage,
        lock=lock,
        other_lock=other_lock,
        report=report,
        md=md["content"],
        html=html["content"],
        evidence=evidence,
        pubkey=pubkey,
        request_ids=ids,
    )


# ── the report ─────────────────────────────────────────────────────────────────────────────
CALLS = N_HOME + M_AWAY
# bob's request events: allowed + completed per call, one per refusal (K cyber, the unknown
# model, the network-bound key, the wrong secret, the call after the lock).
EVENTS = 2 * CALLS + K_CYBER + 1 + 1 + 1 + 1


def test_report_header_names_the_incident_and_its_window(scene: Scene) -> None:
    inc = scene.report["incident"]
    assert inc["id"] == scene.incident
    assert inc["title"] == TITLE
    assert inc["status"] == "contained"
    assert inc["since"] == pytest.approx(scene.since, abs=1e-6)
    assert inc["opened_by"] == principal_id(scene.world, "admin")
    assert inc["subjects"] == {"vendors": ["contractor-co"], "principals": [], "credentials": []}
    assert scene.report["principals"] == ["bob"]
    assert scene.report["events"] == EVENTS
    assert len(scene.report["timeline"]) == EVENTS


def test_report_lists_exactly_the_models_reached_and_tried(scene: Scene) -> None:
    models = {m["model"]: m for m in scene.report["models"]}
    assert sorted(models) == ["assistant", "cyber-model", "no-such-model"]
    assistant = models["assistant"]
    assert (assistant["calls"], assistant["refused"]) == (CALLS, 0)
    # Tokens: the sums of the usage the mock reported to the client, streamed or not.
    assert scene.usage.tokens_in > 0 and scene.usage.tokens_out > 0
    assert assistant["tokens_in"] == scene.usage.tokens_in
    assert assistant["tokens_out"] == scene.usage.tokens_out
    assert scene.t_first <= assistant["first"] <= assistant["last"] <= scene.t_last
    cyber = models["cyber-model"]
    assert (cyber["calls"], cyber["refused"], cyber["tokens_in"], cyber["tokens_out"]) == (
        0,
        K_CYBER,
        0,
        0,
    )
    assert (models["no-such-model"]["calls"], models["no-such-model"]["refused"]) == (0, 1)
    # Sorted by model name.
    assert [m["model"] for m in scene.report["models"]] == sorted(models)


def test_report_counts_refusals_per_model_and_reason(scene: Scene) -> None:
    got = {(r["model"], r["reason"]): r["count"] for r in scene.report["refusals"]}
    assert got == {
        **{("cyber-model", reason): K_CYBER for reason in CYBER_REASONS},
        ("no-such-model", "model.unknown"): 1,
        # Refused before a model was resolved: no model.
        ("-", "credential.network_not_allowed"): 1,
        ("-", "credential.bad_secret"): 1,
        ("-", "lock.active"): 1,
    }
    assert [(r["model"], r["reason"]) for r in scene.report["refusals"]] == sorted(got)


def test_report_lists_the_source_addresses_with_their_counts(scene: Scene) -> None:
    sources = {s["address"]: s for s in scene.report["sources"]}
    assert sorted(sources) == [HOME, AWAY]
    home, away = sources[HOME], sources[AWAY]
    # From home: the N calls; K cyber-model, the network-bound key, the wrong secret and
    # the call after the lock were refused.
    assert (home["calls"], home["refused"]) == (N_HOME, K_CYBER + 3)
    assert (away["calls"], away["refused"]) == (M_AWAY, 1)
    for s in (home, away):
        assert scene.t_first <= s["first"] <= s["last"] <= scene.t_last
    assert scene.report["first_seen"] == min(s["first"] for s in (home, away))
    assert scene.report["last_seen"] == max(s["last"] for s in (home, away))
    assert home["last"] == scene.report["last_seen"]  # the call after the lock


def test_report_names_others_seen_from_the_same_addresses(scene: Scene) -> None:
    others = [
        (o["principal"], o["address"], o["calls"]) for o in scene.report["others_from_same_sources"]
    ]
    # carol's call from 127.0.0.4 is not from one of bob's addresses.
    assert others == [("alice", HOME, 1), ("carol", AWAY, 2)]
    for o in scene.report["others_from_same_sources"]:
        assert scene.since <= o["last_seen"]


def test_report_lists_bobs_keys_with_their_state_now(scene: Scene) -> None:
    at = scene.report["generated_at"]
    expected = {k["id"]: expected_state(k, at) for k in keys_of(scene.world, "bob")}
    got = {c["id"]: c["state"] for c in scene.report["credentials"]}
    assert got == expected
    assert len(got) == 3  # bob, bob-netbound, bob-short
    assert got[key_id(scene.world.keys["bob"])] == "active"
    assert got[key_id(scene.world.keys["bob-netbound"])] == "active"
    assert {c["principal"] for c in scene.report["credentials"]} == {"bob"}
    assert not any(c["canary"] for c in scene.report["credentials"])


def test_report_shows_the_vendor_lock_and_not_unrelated_ones(scene: Scene) -> None:
    locks = scene.report["locks"]
    assert [(lk["id"], lk["kind"], lk["target"], lk["reason"]) for lk in locks] == [
        (scene.lock["id"], "vendor", "contractor-co", LOCK_REASON)
    ]
    assert locks[0]["lifted_at"] is None
    assert scene.other_lock["id"] not in str(scene.report)


def test_report_notes_are_the_incidents_trail(scene: Scene) -> None:
    assert [(n["kind"], n["text"]) for n in scene.report["notes"]] == [
        ("status", "opened"),
        ("action", f"lock {scene.lock['id']}: vendor contractor-co — {LOCK_REASON}"),
        ("status", "open → contained"),
        ("note", NOTE),
    ]


def test_timeline_holds_every_request_event_of_bob_in_log_order(scene: Scene) -> None:
    timeline = scene.report["timeline"]
    indexes = [e["index"] for e in timeline]
    assert indexes == sorted(indexes)
    names = [e["name"] for e in timeline]
    assert names.count("request.allowed") == CALLS
    assert names.count("request.completed") == CALLS
    assert names.count("request.denied") == K_CYBER + 4
    assert all(e["at"] >= scene.since for e in timeline)
    # Denials of keys that did not authenticate are there, by the key they presented.
    by_request = {e["request_id"]: e for e in timeline}
    bad = by_request[scene.request_ids["bad_secret"]]
    assert bad["credential_id"] == key_id(scene.world.keys["bob"])
    assert bad["reasons"] == ["credential.bad_secret"]
    assert bad["status"] == 401
    netbound = by_request[scene.request_ids["netbound"]]
    assert netbound["credential_id"] == key_id(scene.world.keys["bob-netbound"])
    assert netbound["reasons"] == ["credential.network_not_allowed"]
    locked = by_request[scene.request_ids["locked"]]
    assert (locked["status"], locked["reasons"]) == (403, ["lock.active"])
    # Nobody else's calls.
    assert {e["principal"] for e in timeline} <= {"bob", None}
    # Every line is the log's own record at that index.
    raw = [r["record"] for r in rows(scene.world, "SELECT record FROM audit_events ORDER BY seq")]
    for e in timeline:
        record = orjson.loads(raw[e["index"]])
        assert (record["name"], record["request_id"], record["at"]) == (
            e["name"],
            e["request_id"],
            e["at"],
        )


# ── the renderings ─────────────────────────────────────────────────────────────────────────
def _credential_rows(scene: Scene) -> list[tuple[str, str]]:
    return [(c["id"], c["state"]) for c in scene.report["credentials"]]


def test_markdown_carries_the_figures(scene: Scene) -> None:
    md = scene.md
    assert md.startswith(f"# Incident {scene.incident}: ")
    assert "- **Status**: contained" in md
    assert "- **Principals**: bob" in md
    assert f"- **Events**: {EVENTS}" in md
    assert "- **Subjects**: vendors: contractor-co" in md
    u = scene.usage
    assert f"| assistant | {CALLS} | 0 | {u.tokens_in} | {u.tokens_out} | " in md
    assert f"| cyber-model | 0 | {K_CYBER} | 0 | 0 | " in md
    assert "| no-such-model | 0 | 1 | 0 | 0 | " in md
    for reason in CYBER_REASONS:
        assert f"| cyber-model | {reason} | {K_CYBER} |" in md
    assert "| - | credential.bad_secret | 1 |" in md
    assert f"| {HOME} | {N_HOME} | {K_CYBER + 3} | " in md
    assert f"| {AWAY} | {M_AWAY} | 1 | " in md
    assert f"| carol | {AWAY} | 2 | " in md
    assert f"| alice | {HOME} | 1 | " in md
    for kid, state in _credential_rows(scene):
        assert f"| {kid} | bob | {state} | " in md
    # Caller-supplied text is escaped in Markdown too (it is often rendered as HTML).
    reason = html.escape(LOCK_REASON, quote=False)
    assert f"| {scene.lock['id']} | vendor | contractor-co | {reason} | " in md
    assert html.escape(NOTE, quote=False) in md and "<script>" not in md
    # One table row per timeline event.
    timeline = md.split("## Timeline", 1)[1].split("## Notes", 1)[0]
    assert sum(1 for line in timeline.splitlines() if line.startswith("| ")) == EVENTS + 1


def _undated(text: str) -> str:
    """The rendering without its "Generated" time: the report, the Markdown and the HTML are
    three API calls, which may fall either side of a second boundary."""
    text = re.sub(r"^- \*\*Generated\*\*: .*$", "- **Generated**: T", text, flags=re.M)
    return re.sub(r"<dt>Generated</dt><dd>[^<]*</dd>", "<dt>Generated</dt><dd>T</dd>", text)


def test_markdown_is_the_pure_rendering_of_the_report(scene: Scene) -> None:
    assert "- **Generated**: " in scene.md and "<dt>Generated</dt>" in scene.html
    assert _undated(to_markdown(scene.report)) == _undated(scene.md)
    assert _undated(to_html(scene.report)) == _undated(scene.html)


def test_html_carries_the_figures(scene: Scene) -> None:
    html = scene.html
    u = scene.usage
    assert "<dt>Status</dt><dd>contained</dd>" in html
    assert f"<dt>Events</dt><dd>{EVENTS}</dd>" in html
    assert (
        f"<tr><td>assistant</td><td>{CALLS}</td><td>0</td><td>{u.tokens_in}</td>"
        f"<td>{u.tokens_out}</td>"
    ) in html
    assert f"<tr><td>cyber-model</td><td>0</td><td>{K_CYBER}</td>" in html
    for reason in CYBER_REASONS:
        assert f"<tr><td>cyber-model</td><td>{reason}</td><td>{K_CYBER}</td></tr>" in html
    assert f"<tr><td>{HOME}</td><td>{N_HOME}</td><td>{K_CYBER + 3}</td>" in html
    assert f"<tr><td>{AWAY}</td><td>{M_AWAY}</td><td>1</td>" in html
    assert f"<tr><td>carol</td><td>{AWAY}</td><td>2</td>" in html
    for kid, state in _credential_rows(scene):
        assert f"<tr><td>{kid}</td><td>bob</td><td>{state}</td>" in html


def test_html_escapes_every_caller_supplied_text(scene: Scene) -> None:
    html = scene.html
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; seen from 127.0.0.3" in html
    assert "Key leak at contractor-co &lt;img src=x onerror=alert(1)&gt;" in html
    assert "containment &lt;b&gt;now&lt;/b&gt;" in html
    # The document's own markup is intact.
    assert html.startswith("<!doctype html>")
    assert html.count("<table>") == html.count("</table>") == 8


def test_markdown_cells_cannot_break_out_of_their_table() -> None:
    report = {
        "incident": {
            "id": "inc_x",
            "title": "a | b\nc",
            "status": "open",
            "opened_by": "me",
            "opened_at": 0.0,
            "since": 0.0,
            "subjects": {"vendors": ["v"], "principals": [], "credentials": []},
        },
        "principals": [],
        "first_seen": None,
        "last_seen": None,
        "models": [],
        "refusals": [],
        "sources": [],
        "others_from_same_sources": [],
        "credentials": [],
        "locks": [],
        "notes": [{"at": 0.0, "author": "me", "kind": "note", "text": "x | y\n| z |"}],
        "events": 0,
        "timeline": [],
        "generated_at": 0.0,
    }
    md = to_markdown(report)
    assert md.startswith("# Incident inc_x: a \\| b c\n")
    assert "| 1970-01-01 00:00:00Z | me | note | x \\| y \\| z \\| |" in md
    assert md.count("None.") == 7  # every empty table says so
    html = to_html(report)
    assert "<td>x | y\n| z |</td>" in html


# ── the evidence ───────────────────────────────────────────────────────────────────────────
def test_evidence_bundle_proves_every_timeline_event(scene: Scene) -> None:
    ev = scene.evidence
    assert ev["type"] == "evidence"
    assert ev["verify"] == "garrison audit verify-proof evidence.json --fingerprint FINGERPRINT"
    assert ev["incident"] == scene.report["incident"]
    assert ev["not_yet_checkpointed"] == []
    assert [e["index"] for e in ev["events"]] == [e["index"] for e in scene.report["timeline"]]
    raw = [r["record"] for r in rows(scene.world, "SELECT record FROM audit_events ORDER BY seq")]
    for e in ev["events"]:
        assert e["record"].encode() == raw[e["index"]]
    assert ev["checkpoint"]["tree_size"] > max(e["index"] for e in ev["events"])
    # The bundle's copy of the keys is what `audit pubkey` prints.
    assert ev["public_keys"] == orjson.loads(scene.pubkey.read_bytes())


def test_evidence_bundle_verifies_in_process(scene: Scene) -> None:
    proven, size = check_evidence_bundle(scene.evidence, load_keys(scene.pubkey))
    assert proven == EVENTS
    assert size == scene.evidence["checkpoint"]["tree_size"]


def test_evidence_bundle_verifies_offline_with_the_cli(scene: Scene, tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_bytes(orjson.dumps(scene.evidence))
    out = cli("audit", "verify-proof", str(path), "--pubkey", str(scene.pubkey))
    assert out.returncode == 0, out.stdout + out.stderr
    size = scene.evidence["checkpoint"]["tree_size"]
    kid = scene.evidence["checkpoint"]["key_id"]
    assert out.stdout.splitlines() == [
        f"OK: all {EVENTS} events are in the log signed at size {size}",
        f"signed by key {kid}, fingerprint {operator_fingerprints(scene)[kid]}",
    ]


def _altered(scene: Scene) -> tuple[dict[str, Any], int]:
    """The bundle with bob's first completed call claiming 1000 more output tokens."""
    bundle = orjson.loads(orjson.dumps(scene.evidence))
    for item in bundle["events"]:
        record = orjson.loads(item["record"])
        if record["name"] == "request.completed":
            record["data"]["tokens_out"] += 1000
            item["record"] = orjson.dumps(record).decode()
            return bundle, item["index"]
    raise AssertionError("no completed call in the bundle")


def test_evidence_with_one_record_altered_fails_in_process(scene: Scene) -> None:
    bundle, index = _altered(scene)
    with pytest.raises(ProofError, match=f"event {index}"):
        check_evidence_bundle(bundle, load_keys(scene.pubkey))


def test_evidence_with_one_record_altered_fails_with_the_cli(scene: Scene, tmp_path: Path) -> None:
    bundle, _ = _altered(scene)
    path = tmp_path / "evidence.json"
    path.write_bytes(orjson.dumps(bundle))
    out = cli("audit", "verify-proof", str(path), "--pubkey", str(scene.pubkey))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout


def test_evidence_with_a_moved_event_or_a_forged_checkpoint_fails(scene: Scene) -> None:
    keys = load_keys(scene.pubkey)
    moved = orjson.loads(orjson.dumps(scene.evidence))
    moved["events"][0]["index"] += 1
    with pytest.raises(ProofError):
        check_evidence_bundle(moved, keys)
    forged = orjson.loads(orjson.dumps(scene.evidence))
    forged["checkpoint"]["tree_size"] += 1
    with pytest.raises(ProofError):
        check_evidence_bundle(forged, keys)
    with pytest.raises(ProofError, match="not an evidence bundle"):
        check_evidence_bundle({**scene.evidence, "type": "inclusion"}, keys)


def test_evidence_checked_with_a_stranger_key_fails_with_the_cli(
    scene: Scene, tmp_path: Path
) -> None:
    stranger = Ed25519PrivateKey.generate().public_key()
    wrong = tmp_path / "wrong.pub"
    wrong.write_text(
        base64.b64encode(stranger.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    )
    path = tmp_path / "evidence.json"
    path.write_bytes(orjson.dumps(scene.evidence))
    out = cli("audit", "verify-proof", str(path), "--pubkey", str(wrong))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout


def operator_fingerprints(scene: Scene) -> dict[str, str]:
    """What `garrison audit pubkey --fingerprint` prints on the gateway host: id → fingerprint."""
    config = scene.world.root / "data" / CONFIG_FILE
    out = cli("audit", "pubkey", "--fingerprint", "--config", str(config))
    assert out.returncode == 0, out.stderr
    return dict(line.split() for line in out.stdout.splitlines())


def _resigned_by_a_stranger(scene: Scene) -> dict[str, Any]:
    """The bundle with its checkpoint re-signed by another key, and that key shipped inside:
    self-consistent, so a check that trusts the bundle's own key would pass it."""
    stranger = Ed25519PrivateKey.generate()
    raw = stranger.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = key_id_of(stranger.public_key())
    bundle = orjson.loads(orjson.dumps(scene.evidence))
    cp = Checkpoint.from_dict(bundle["checkpoint"])
    unsigned = dataclasses.replace(cp, key_id=kid, signature="")
    signature = base64.b64encode(stranger.sign(unsigned.body())).decode()
    bundle["checkpoint"] = dataclasses.replace(unsigned, signature=signature).to_dict()
    bundle["public_keys"] = {kid: base64.b64encode(raw).decode()}
    return bundle


def test_evidence_verify_proof_needs_a_key_obtained_independently(
    scene: Scene, tmp_path: Path
) -> None:
    path = tmp_path / "evidence.json"
    path.write_bytes(orjson.dumps(scene.evidence))
    out = cli("audit", "verify-proof", str(path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "obtained independently" in out.stderr


def test_evidence_verifies_with_the_operators_fingerprint(scene: Scene, tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_bytes(orjson.dumps(scene.evidence))
    kid = scene.evidence["checkpoint"]["key_id"]
    fingerprint = operator_fingerprints(scene)[kid]
    assert fingerprint.startswith("sha256:") and fingerprint[7:].startswith(kid)
    out = cli("audit", "verify-proof", str(path), "--fingerprint", fingerprint.upper())
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"fingerprint {fingerprint}" in out.stdout


def test_evidence_resigned_with_a_key_shipped_inside_fails_against_the_fingerprint(
    scene: Scene, tmp_path: Path
) -> None:
    path = tmp_path / "evidence.json"
    path.write_bytes(orjson.dumps(_resigned_by_a_stranger(scene)))
    fingerprint = operator_fingerprints(scene)[scene.evidence["checkpoint"]["key_id"]]
    out = cli("audit", "verify-proof", str(path), "--fingerprint", fingerprint)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout
    # The operator's key file fails it too; only the bundle's own key would have passed it.
    out = cli("audit", "verify-proof", str(path), "--pubkey", str(scene.pubkey))
    assert out.returncode == 1, out.stdout + out.stderr


@MODULE
async def test_incident_export_ships_no_key_and_says_to_get_one_independently(
    scene: Scene, tmp_path: Path
) -> None:
    out_dir = tmp_path / "bundle"
    env = {
        **os.environ,
        "GARRISON_CONFIG": "",
        "GARRISON_ADMIN_URL": scene.world.base,
        "GARRISON_ADMIN_KEY": scene.world.admin_key,
    }
    config = str(scene.world.root / "data" / CONFIG_FILE)
    args = ["incident", "export", scene.incident, "--out", str(out_dir), "--config", config]
    # The gateway runs on this test's loop: the CLI must not block it.
    proc = await asyncio.create_subprocess_exec(
        *GARRISON, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout_bytes, stderr_bytes = await asyncio.wait_for(proc.communicate(), 60)
    stdout = stdout_bytes.decode()
    assert proc.returncode == 0, stdout + stderr_bytes.decode()
    assert sorted(p.name for p in out_dir.iterdir()) == ["VERIFY.txt", "evidence.json"]
    kid = orjson.loads((out_dir / "evidence.json").read_bytes())["checkpoint"]["key_id"]
    fingerprint = operator_fingerprints(scene)[kid]
    verify_txt = (out_dir / "VERIFY.txt").read_text()
    assert fingerprint in verify_txt and "independently" in verify_txt
    assert "--fingerprint" in verify_txt
    assert fingerprint in stdout
    evidence = str(out_dir / "evidence.json")
    check = cli("audit", "verify-proof", evidence, "--fingerprint", fingerprint)
    assert check.returncode == 0, check.stdout + check.stderr


# ── the admin API around it ────────────────────────────────────────────────────────────────
@MODULE
async def test_the_incident_is_listed(scene: Scene) -> None:
    status, listed = await admin_call(scene.world, scene.world.admin_key, "GET", "/incidents")
    assert status == 200, listed
    (found,) = [i for i in listed if i["id"] == scene.incident]
    assert (found["title"], found["status"]) == (TITLE, "contained")


@MODULE
async def test_an_illegal_transition_over_the_api_is_400_naming_the_rule(scene: Scene) -> None:
    world = scene.world
    before = rows(world, "SELECT count(*) AS n FROM incident_notes")[0]["n"]
    status, body = await admin_call(
        world, world.admin_key, "PATCH", f"/incidents/{scene.incident}", {"status": "closed"}
    )
    assert status == 400, body
    assert body["error"]["rule"] == "incident-lifecycle"
    assert "from contained to closed" in body["error"]["message"]
    assert rows(world, "SELECT count(*) AS n FROM incident_notes")[0]["n"] == before
    status, body = await admin_call(
        world, world.admin_key, "PATCH", f"/incidents/{scene.incident}", {"status": "bogus"}
    )
    assert status == 400, body


@MODULE
async def test_report_of_an_unknown_incident_is_404_and_a_bad_format_400(scene: Scene) -> None:
    world = scene.world
    status, body = await admin_call(world, world.admin_key, "GET", "/incidents/inc_nope/report")
    assert status == 404, body
    status, body = await admin_call(
        world,
        world.admin_key,
        "GET",
        f"/incidents/{scene.incident}/report",
        params={"format": "pdf"},
    )
    assert status == 400, body


@MODULE
async def test_an_incident_starting_in_the_future_is_refused(scene: Scene) -> None:
    world = scene.world
    before = rows(world, "SELECT count(*) AS n FROM incidents")[0]["n"]
    later = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    status, body = await admin_call(
        world, world.admin_key, "POST", "/incidents", {"title": "t", "since": later}
    )
    assert status == 400, body
    status, body = await admin_call(
        world, world.admin_key, "POST", "/incidents", {"title": "t", "vendors": ["ghost-co"]}
    )
    assert status == 400, body
    assert rows(world, "SELECT count(*) AS n FROM incidents")[0]["n"] == before


# ── roles ──────────────────────────────────────────────────────────────────────────────────
STABLE = ("incident", "principals", "models", "refusals", "sources", "locks", "events")


@MODULE
async def test_an_auditor_reads_but_cannot_open_or_change_incidents(scene: Scene) -> None:
    world = scene.world
    auditor = make_admin(world, "audra", ["auditor"])
    await world.reload()
    path = f"/incidents/{scene.incident}"
    status, report = await admin_call(world, auditor, "GET", f"{path}/report")
    assert status == 200, report
    assert {k: report[k] for k in STABLE} == {k: scene.report[k] for k in STABLE}
    for fmt in ("md", "html"):
        status, body = await admin_call(
            world, auditor, "GET", f"{path}/report", params={"format": fmt}
        )
        assert status == 200, body
        assert body["format"] == fmt
    status, listed = await admin_call(world, auditor, "GET", "/incidents")
    assert status == 200 and scene.incident in {i["id"] for i in listed}
    status, bundle = await admin_call(world, auditor, "GET", f"{path}/evidence")
    assert status == 200, bundle
    check_evidence_bundle(bundle, load_keys(scene.pubkey))

    before = rows(world, "SELECT count(*) AS n FROM incidents")[0]["n"]
    notes_before = rows(world, "SELECT count(*) AS n FROM incident_notes")[0]["n"]
    status, body = await admin_call(
        world, auditor, "POST", "/incidents", {"title": "mine", "vendors": ["contractor-co"]}
    )
    assert status == 403, body
    status, body = await admin_call(world, auditor, "PATCH", path, {"note": "auditor was here"})
    assert status == 403, body
    status, body = await admin_call(world, auditor, "PATCH", path, {"status": "resolved"})
    assert status == 403, body
    assert rows(world, "SELECT count(*) AS n FROM incidents")[0]["n"] == before
    assert rows(world, "SELECT count(*) AS n FROM incident_notes")[0]["n"] == notes_before
    await world.settle()
    refused = [
        e for e in world.events("admin.denied") if e["actor"] == principal_id(world, "audra")
    ]
    assert [e["data"]["reasons"] for e in refused] == [["admin.role_lacks_action"]] * 3


@MODULE
async def test_a_vendor_manager_and_others_can_neither_read_nor_open_incidents(
    scene: Scene,
) -> None:
    world = scene.world
    callers = {
        "vendor-manager": make_admin(world, "vera", ["vendor-manager"]),
        "approver": make_admin(world, "appy", ["approver"]),
        "no role": world.keys["alice"],
    }
    await world.reload()
    path = f"/incidents/{scene.incident}"
    before = rows(world, "SELECT count(*) AS n FROM incidents")[0]["n"]
    for who, key in callers.items():
        for method, route, body in [
            ("GET", "/incidents", None),
            ("GET", f"{path}/report", None),
            ("GET", f"{path}/evidence", None),
            ("POST", "/incidents", {"title": "x", "vendors": ["contractor-co"]}),
            ("PATCH", path, {"note": "hello"}),
        ]:
            status, reply = await admin_call(world, key, method, route, body)
            assert status == 403, (who, method, route, reply)
            assert TITLE not in str(reply)
    assert rows(world, "SELECT count(*) AS n FROM incidents")[0]["n"] == before


# ── rotating a vendor's keys ───────────────────────────────────────────────────────────────
def _address_in(networks_json: str) -> str:
    net = ipaddress.ip_network(orjson.loads(networks_json)[0])
    return str(next(iter(net.hosts())))


async def test_vendor_key_rotation_revokes_every_key_and_issues_one_that_works_at_once(
    world: World,
) -> None:
    since_dt = datetime.now(UTC)
    old = {k["id"]: k for k in keys_of(world, "bob")}
    assert len(old) == 3
    counts = table_counts(world)
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/vendors/contractor-co/rotate-keys",
        {"reason": "incident: leaked key"},
    )
    assert status == 201, body
    assert body["vendor"] == "contractor-co"
    (issued,) = body["issued"]  # bob is the vendor's only person
    # A person's key is theirs to make (issue 12): bob gets an enrollment code, never a key.
    assert issued["principal_id"] == principal_id(world, "bob")
    assert "key" not in issued and issued["enrollment_code"].startswith("ge_")
    assert table_counts(world)["credentials"] == counts["credentials"]

    now = {k["id"]: k for k in keys_of(world, "bob")}
    rotated_at = {now[k]["revoked_at"] for k in old if now[k]["revoked_at"] is not None}
    assert len(rotated_at) == 1  # one moment, one transaction
    (at,) = rotated_at
    for kid, before in old.items():
        if before["expires_at"] > at:  # live at the rotation: revoked
            assert now[kid]["revoked_at"] == at, kid
        assert expected_state(now[kid], time.time()) != "active", kid

    # bob enrolls from his own address: the new key works at once; every old key is refused.
    status, mine = await admin_call(
        world,
        None,
        "POST",
        "/enroll",
        {"code": issued["enrollment_code"]},
        local_addr="127.0.9.1",
    )
    assert status == 201, mine
    new = {k["id"]: k for k in keys_of(world, "bob")}[mine["id"]]
    reply = await chat(world, mine["key"], "assistant", _address_in(new["networks"]))
    assert reply.status == 200, reply.body
    refused = await chat(world, world.keys["bob"], "assistant", HOME)
    assert refused.status == 401, refused.body
    netbound = await chat(world, world.keys["bob-netbound"], "assistant", "127.0.0.2")
    assert netbound.status == 401, netbound.body
    short = await chat(world, world.keys["bob-short"], "assistant", HOME)
    assert short.status == 401, short.body
    # Nobody else's keys were touched.
    for who in ("alice", "carol"):
        assert (await chat(world, world.keys[who], "assistant", HOME)).status == 200
    await world.settle()

    denied = {e["request_id"]: e for e in world.events("request.denied")}
    assert denied[refused.request_id]["data"]["reasons"] == ["credential.revoked"]
    assert denied[netbound.request_id]["data"]["reasons"] == ["credential.revoked"]
    org = org_id(world, "contractor-co")
    revoked = [
        e for e in world.events("credential.revoked") if e["data"].get("vendor_rotation") == org
    ]
    assert {e["credential_id"] for e in revoked} == {
        k for k, v in old.items() if v["expires_at"] > at
    }
    assert all(e["data"]["reason"] == "incident: leaked key" for e in revoked)
    created = [
        e for e in world.events("credential.created") if e["data"].get("vendor_rotation") == org
    ]
    assert created == []  # the admin made no key for bob: he enrolled his own
    enrolled = [e for e in world.events("credential.created") if e["credential_id"] == mine["id"]]
    assert enrolled[0]["data"]["provenance"] == "enrolled"
    # The key and the code were shown once, in the responses: never written to the log.
    assert mine["key"].encode() not in world.raw_audit()
    assert mine["key"].split("_", 2)[2].encode() not in world.raw_audit()
    assert issued["enrollment_code"].encode() not in world.raw_audit()

    # An incident on bob sees it all: old keys revoked, the new one active, and the refusal
    # of the revoked key (which did not authenticate) by the key it presented.
    status, opened = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/incidents",
        {"title": "rotation", "since": since_dt.isoformat(), "principals": ["bob"]},
    )
    assert status == 201, opened
    status, report = await admin_call(
        world, world.admin_key, "GET", f"/incidents/{opened['id']}/report"
    )
    assert status == 200, report
    states = {c["id"]: c["state"] for c in report["credentials"]}
    assert states[mine["id"]] == "active"
    assert all(states[k] in ("revoked", "expired") for k in old)
    assert {k for k in old if states[k] == "revoked"} == {e["credential_id"] for e in revoked}
    lines = {e["request_id"]: e for e in report["timeline"] if e["request_id"]}
    assert lines[refused.request_id]["reasons"] == ["credential.revoked"]
    assert lines[refused.request_id]["credential_id"] == key_id(world.keys["bob"])
    assert report["models"][0]["model"] == "assistant"
    assert report["models"][0]["calls"] == 1


async def test_rotating_a_suspended_vendor_only_revokes(world: World) -> None:
    world.directory.set_vendor_status("contractor-co", VendorStatus.SUSPENDED, now=time.time())
    await world.reload()
    live = [k["id"] for k in keys_of(world, "bob") if k["expires_at"] > time.time() + 5]
    status, body = await admin_call(
        world, world.admin_key, "POST", "/vendors/contractor-co/rotate-keys", {"reason": "gone"}
    )
    assert status == 201, body
    assert body["issued"] == []
    after = {k["id"]: k for k in keys_of(world, "bob")}
    assert len(after) == 3
    assert all(after[k]["revoked_at"] is not None for k in live)


async def test_vendor_key_rotation_refusals_write_nothing(world: World) -> None:
    auditor = make_admin(world, "audra", ["auditor"])
    manager = make_admin(world, "vera", ["vendor-manager"])  # sponsors no vendor
    await world.reload()
    before = table_counts(world), keys_of(world, "bob")
    cases = [
        (world.admin_key, "internal", {"reason": "x"}, 400),  # not a vendor
        (world.admin_key, "ghost-co", {"reason": "x"}, None),  # no such vendor
        (world.admin_key, "contractor-co", {}, 400),  # a reason is required
        (auditor, "contractor-co", {"reason": "x"}, 403),
        # Out of a vendor-manager's scope: looks exactly like a vendor that does not exist.
        (manager, "contractor-co", {"reason": "x"}, 404),
        (manager, "ghost-co", {"reason": "x"}, 404),
    ]
    messages = {}
    for key, ref, body, expected in cases:
        status, reply = await admin_call(world, key, "POST", f"/vendors/{ref}/rotate-keys", body)
        if expected is None:
            assert status in (400, 404), (ref, reply)
        else:
            assert status == expected, (ref, reply)
        if key == manager:
            messages[ref] = reply["error"]["message"].replace(ref, "REF")
        assert (table_counts(world), keys_of(world, "bob")) == before, ref
    assert messages["contractor-co"] == messages["ghost-co"]
    assert (await chat(world, world.keys["bob"], "assistant", HOME)).status == 200
