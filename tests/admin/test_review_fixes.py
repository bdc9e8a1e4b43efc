"""Review fixes on the admin API, over HTTP against a running gateway (loopback only):

* 1 — creating a principal above internal, in a compartment or with a role is a two-person
  proposal (202, kind ``principal-create``) applied when a second security-admin approves;
  a bad proposal is refused at once; a plain internal principal is created at once (201);
* 2 — re-pointing a model (upstream URL, upstream model, API) is two-person too; an approved
  move to a new host without a new key drops the old key (it never reaches the new host);
* 4 — detectors read the admin API: a canary key used on any admin route raises
  ``canary-key-used``; a burst of 401s on ``/whoami`` raises ``refusal-burst``;
* 5 — asking for access answers one 404 for a model that does not exist, is not critical,
  or is beyond the caller (clearance, compartments, vendor ceiling): no oracle;
* 9 — admin reads are durable before they are answered: with the audit log unwritable a
  read is a 503 and no data leaves.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest

from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi
from garrison.mock import MockConfig, MockUpstream
from tests.support.admin import admin_call, make_admin, table_counts
from tests.support.db import hold_write_lock
from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

T = TypeVar("T")
HOUR = 3600.0
WITHIN_S = 10.0
USER = [{"role": "user", "content": "hello"}]


# ── helpers ────────────────────────────────────────────────────────────────────────────────
def count(world: World, table: str) -> int:
    conn = sqlite3.connect(world.db_path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


def sql(world: World, query: str, *params: Any) -> None:
    conn = sqlite3.connect(world.db_path)
    try:
        conn.execute(query, params)
        conn.commit()
    finally:
        conn.close()


async def eventually(probe: Callable[[], Awaitable[T]], what: str, within: float = WITHIN_S) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.02)


async def chat(world: World, key: str, model: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": model, "messages": USER},
            headers={"authorization": f"Bearer {key}"},
        ) as resp,
    ):
        return resp.status, await resp.read()


def wrong_secret(key: str) -> str:
    prefix, key_id, secret = key.split("_", 2)
    return f"{prefix}_{key_id}_" + "".join("B" if c == "A" else "A" for c in secret)


def key_id(token: str) -> str:
    return token.split("_")[1]


@dataclass
class Admins:
    world: World
    sec_2: str  # a second security-admin
    ivan: str  # cleared critical, no roles

    @property
    def admin(self) -> str:
        return self.world.admin_key

    async def ok(self, key: str, method: str, path: str, body: Any = None, want: int = 200) -> Any:
        status, answer = await admin_call(self.world, key, method, path, body)
        assert status == want, (method, path, status, answer)
        return answer

    async def refused(
        self, key: str, method: str, path: str, body: Any = None, *, status: int
    ) -> dict[str, Any]:
        got, answer = await admin_call(self.world, key, method, path, body)
        assert got == status, (method, path, got, answer)
        assert set(answer) == {"error"}, answer
        return dict(answer["error"])

    def principal(self, name: str) -> Any:
        snap = self.world.gateway.state.snapshot
        return next((p for p in snap.principals.values() if p.name == name), None)

    def model(self, name: str) -> Any:
        return self.world.gateway.state.snapshot.models[name]


@pytest.fixture
async def admins(world: World) -> AsyncIterator[Admins]:
    sec_2 = make_admin(world, "sec-2", ["security-admin"])
    ivan = make_admin(world, "ivan", [], clearance=Level.CRITICAL)
    now = time.time()
    common: dict[str, Any] = dict(
        upstream_url=f"http://127.0.0.1:{world.mock.port}/v1",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        upstream_key=UPSTREAM_KEY,
        now=now,
    )
    world.directory.create_model("oracle", level=Level.CRITICAL, **common)
    world.directory.create_model(
        "cyber-oracle", level=Level.CRITICAL, compartments=["cyber"], **common
    )
    await world.reload()
    yield Admins(world, sec_2, ivan)


# ── 1: creating a principal with access takes two admins ───────────────────────────────────
SENSITIVE_CREATIONS = {
    "restricted": {"clearance": "restricted"},
    "critical": {"clearance": "critical"},
    "compartment": {"compartments": ["cyber"]},
    "role": {"roles": ["auditor"]},
    "security-admin": {"roles": ["security-admin"]},
    "everything": {
        "clearance": "critical",
        "compartments": ["cyber", "bio"],
        "roles": ["approver"],
    },
}


@pytest.mark.parametrize("extra", SENSITIVE_CREATIONS.values(), ids=SENSITIVE_CREATIONS.keys())
async def test_creating_a_principal_with_access_waits_for_a_second_admin(
    admins: Admins, extra: dict[str, Any]
) -> None:
    w = admins.world
    body = {"name": "dave", "org": "internal", **extra}
    before = table_counts(w)
    pending_before = count(w, "pending_changes")
    proposal = await admins.ok(admins.admin, "POST", "/principals", body, want=202)
    assert set(proposal) == {"pending"}
    pending = proposal["pending"]
    assert pending["kind"] == "principal-create"
    assert pending["target"] == "dave"
    assert pending["status"] == "pending"
    assert pending["requested_by"] == admins.principal("admin").id
    # Not created: no principal row, nobody in the snapshot, only the proposal written.
    assert admins.principal("dave") is None
    assert table_counts(w)["principals"] == before["principals"]
    assert count(w, "pending_changes") == pending_before + 1
    (listed,) = await admins.ok(admins.sec_2, "GET", "/changes")
    assert listed["id"] == pending["id"] and listed["kind"] == "principal-create"

    applied = await admins.ok(admins.sec_2, "POST", f"/changes/{pending['id']}/approve", {})
    dave = admins.principal("dave")
    assert dave is not None
    assert applied == {"id": pending["id"], "status": "approved", "result": dave.id}
    assert dave.clearance is Level.parse(extra.get("clearance", "internal"))
    assert dave.compartments == frozenset(extra.get("compartments", []))
    assert dave.roles == frozenset(extra.get("roles", []))
    await w.settle()
    (created,) = [e for e in w.events("principal.created") if e["data"]["name"] == "dave"]
    assert created["actor"] == admins.principal("sec-2").id
    assert created["data"]["origin"]["change_id"] == pending["id"]
    assert created["data"]["origin"]["requested_by"] == admins.principal("admin").id
    (done,) = await admins.ok(admins.sec_2, "GET", "/changes?all=true")
    assert done["status"] == "approved"


async def test_the_proposer_cannot_approve_their_own_principal(admins: Admins) -> None:
    body = {"name": "dave", "org": "internal", "clearance": "critical"}
    proposal = await admins.ok(admins.admin, "POST", "/principals", body, want=202)
    change_id = proposal["pending"]["id"]
    error = await admins.refused(
        admins.admin, "POST", f"/changes/{change_id}/approve", {}, status=403
    )
    assert error["rule"] == "two-person"
    assert admins.principal("dave") is None
    # Denied: never created.
    await admins.ok(admins.sec_2, "POST", f"/changes/{change_id}/deny", {})
    await admins.refused(admins.sec_2, "POST", f"/changes/{change_id}/approve", {}, status=409)
    assert admins.principal("dave") is None


@pytest.mark.parametrize(
    "body",
    [
        {"name": "dave", "org": "internal"},
        {"name": "dave", "org": "internal", "clearance": "internal", "compartments": []},
        {"name": "dave", "org": "internal", "clearance": "public"},
        {"name": "svc-1", "org": "internal", "kind": "service"},
        {"name": "dave", "org": "contractor-co", "clearance": "internal"},
    ],
    ids=["default", "explicit", "public", "service", "vendor"],
)
async def test_a_plain_principal_is_created_at_once(admins: Admins, body: dict[str, Any]) -> None:
    w = admins.world
    pending_before = count(w, "pending_changes")
    created = await admins.ok(admins.admin, "POST", "/principals", body, want=201)
    assert set(created) == {"id", "name"} and created["name"] == body["name"]
    made = admins.principal(body["name"])
    assert made is not None and made.id == created["id"]
    assert made.clearance is Level.parse(body.get("clearance", "internal"))
    assert made.kind is PrincipalKind(body.get("kind", "human"))
    assert not made.roles and not made.compartments
    assert count(w, "pending_changes") == pending_before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "dave", "org": "no-such-org", "clearance": "critical"}, 400),
        ({"name": "carol", "org": "internal", "clearance": "critical"}, 409),
        ({"name": "dave", "org": "contractor-co", "clearance": "restricted"}, 400),
        ({"name": "dave", "org": "contractor-co", "compartments": ["cyber"]}, 400),
        ({"name": "dave", "org": "contractor-co", "roles": ["auditor"]}, 400),
        ({"name": "svc-1", "org": "internal", "kind": "service", "roles": ["auditor"]}, 400),
        ({"name": "prn_0123456789abcdef", "org": "internal", "clearance": "critical"}, 400),
    ],
    ids=[
        "unknown-org",
        "name-taken",
        "above-vendor-ceiling",
        "compartment-beyond-vendor-ceiling",
        "non-vendor-role-in-a-vendor",
        "service-with-a-role",
        "id-shaped-name",
    ],
)
async def test_a_bad_proposal_is_refused_at_once(
    admins: Admins, body: dict[str, Any], status: int
) -> None:
    w = admins.world
    before = table_counts(w)
    pending_before = count(w, "pending_changes")
    await admins.refused(admins.admin, "POST", "/principals", body, status=status)
    assert count(w, "pending_changes") == pending_before
    assert table_counts(w) == before


async def test_a_name_taken_before_approval_fails_the_approval_cleanly(admins: Admins) -> None:
    w = admins.world
    body = {"name": "dave", "org": "internal", "clearance": "restricted"}
    change_id = (await admins.ok(admins.admin, "POST", "/principals", body, want=202))["pending"][
        "id"
    ]
    await admins.ok(admins.admin, "POST", "/principals", {"name": "dave", "org": "internal"}, 201)
    before = table_counts(w)
    await admins.refused(admins.sec_2, "POST", f"/changes/{change_id}/approve", {}, status=409)
    assert table_counts(w) == before
    assert admins.principal("dave").clearance is Level.INTERNAL


async def test_creating_with_roles_still_needs_the_right_to_set_access(admins: Admins) -> None:
    # A vendor-manager may add people to its vendor, but not give roles (even via a proposal).
    manager = make_admin(admins.world, "vm", ["vendor-manager"], org="contractor-co")
    await admins.world.reload()
    pending_before = count(admins.world, "pending_changes")
    body = {"name": "vdave", "org": "contractor-co", "roles": ["vendor-manager"]}
    await admins.refused(manager, "POST", "/principals", body, status=403)
    assert count(admins.world, "pending_changes") == pending_before
    plain = {"name": "vdave", "org": "contractor-co"}
    await admins.ok(manager, "POST", "/principals", plain, want=201)


# ── 2: re-pointing a model takes two admins ────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("field", "value"),
    [("upstream_model", "mock-large"), ("upstream_url", "/v2"), ("api", "anthropic")],
    ids=["upstream-model", "upstream-url", "api"],
)
async def test_re_pointing_a_model_waits_for_a_second_admin(
    admins: Admins, field: str, value: str
) -> None:
    w = admins.world
    if field == "upstream_url":  # the same host, another path
        value = f"http://127.0.0.1:{w.mock.port}{value}"
    before = admins.model("assistant")
    proposal = await admins.ok(admins.admin, "PATCH", "/models/assistant", {field: value}, 202)
    change_id = proposal["pending"]["id"]
    assert proposal["pending"]["kind"] == "model-update"
    assert proposal["pending"]["target"] == before.id
    assert admins.model("assistant") == before
    assert (await chat(w, w.keys["carol"], "assistant"))[0] == 200  # still served as before
    await admins.refused(admins.admin, "POST", f"/changes/{change_id}/approve", {}, status=403)

    applied = await admins.ok(admins.sec_2, "POST", f"/changes/{change_id}/approve", {})
    assert applied["result"] == {field: [str(getattr(before, field)), value]}
    after = admins.model("assistant")
    assert str(getattr(after, field)) == value
    # The same host: the upstream key stays.
    assert after.upstream_key is not None and after.upstream_key.reveal() == UPSTREAM_KEY
    assert after.auth_style is AuthStyle.BEARER


async def test_a_credential_change_alone_applies_at_once(admins: Admins) -> None:
    w = admins.world
    pending_before = count(w, "pending_changes")
    answer = await admins.ok(
        admins.admin, "PATCH", "/models/assistant", {"upstream_key": "sk-rotated-0123456789"}
    )
    assert answer == {"changes": {"upstream_key": "replaced"}}
    answer = await admins.ok(admins.admin, "PATCH", "/models/assistant", {"level": "restricted"})
    assert answer == {"changes": {"level": ["internal", "restricted"]}}
    assert count(w, "pending_changes") == pending_before


async def test_a_re_pointing_cannot_carry_a_credential(admins: Admins) -> None:
    w = admins.world
    before = count(w, "pending_changes")
    error = await admins.refused(
        admins.admin,
        "PATCH",
        "/models/assistant",
        {"upstream_url": "http://127.0.0.2:9/v1", "upstream_key": "sk-new-0123456789"},
        status=400,
    )
    assert "separate call" in error["message"]
    assert count(w, "pending_changes") == before
    assert "sk-new-0123456789" not in repr(w.raw_audit())


async def test_an_approved_move_to_a_new_host_never_sends_it_the_old_key(admins: Admins) -> None:
    w = admins.world
    elsewhere = MockUpstream(MockConfig())
    port = await elsewhere.start("127.0.0.2", 0)
    try:
        url = f"http://127.0.0.2:{port}/v1"
        proposal = await admins.ok(
            admins.admin, "PATCH", "/models/assistant", {"upstream_url": url}, want=202
        )
        applied = await admins.ok(
            admins.sec_2, "POST", f"/changes/{proposal['pending']['id']}/approve", {}
        )
        assert applied["result"] == {
            "upstream_url": [f"http://127.0.0.1:{w.mock.port}/v1", url],
            "upstream_key": "removed (new host)",
            "auth_style": ["bearer", "none"],
        }
        model = admins.model("assistant")
        assert model.upstream_url == url
        assert model.upstream_key is None and model.auth_style is AuthStyle.NONE
        shown = await admins.ok(admins.admin, "GET", "/models/assistant")
        assert shown["upstream_url"] == url
        await w.settle()
        event = w.events("model.updated")[-1]
        assert event["data"]["changes"]["upstream_key"] == "removed (new host)"

        seen_before = len(w.mock.seen)
        status, _ = await chat(w, w.keys["carol"], "assistant")
        assert status == 200
        (request,) = elsewhere.seen
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert "authorization" not in headers and "x-api-key" not in headers
        assert UPSTREAM_KEY not in repr(request.headers)
        assert len(w.mock.seen) == seen_before  # the old upstream saw nothing
    finally:
        await elsewhere.stop()


# ── 4: detectors read the admin API ────────────────────────────────────────────────────────
async def alerts_for(world: World, rule_id: str) -> list[dict[str, Any]]:
    status, body = await admin_call(world, world.admin_key, "GET", "/alerts")
    assert status == 200, body
    return [a for a in body if a["rule_id"] == rule_id]


async def metrics(world: World, key: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(world.base + "/metrics", headers={"authorization": f"Bearer {key}"}) as r,
    ):
        await r.read()
        return r.status


CANARY_USES = {
    # A route whose reads are not otherwise audited.
    "metrics": (["auditor"], "GET", "/metrics", 200),
    # A write (recorded as the write, not as a read).
    "write": (["security-admin"], "POST", "/admin/v1/orgs", 201),
    # A route the canary's holder may not use at all.
    "refused": ([], "GET", "/admin/v1/vendors", 403),
    "read": (["auditor"], "GET", "/admin/v1/vendors", 200),
}


@pytest.mark.parametrize("use", CANARY_USES.values(), ids=CANARY_USES.keys())
async def test_a_canary_key_used_on_the_admin_api_raises_an_alert(
    world: World, use: tuple[list[str], str, str, int]
) -> None:
    roles, method, path, want = use
    now = time.time()
    world.directory.create_principal(
        "honey",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.INTERNAL,
        roles=roles,
        now=now,
    )
    canary = world.directory.create_key("honey", now=now, canary=True)
    token = canary.key.token.reveal()
    await world.reload()
    if path == "/metrics":
        status = await metrics(world, token)
    else:
        body = {"name": "honey-org"} if method == "POST" else None
        status, _ = await admin_call(world, token, method, path.removeprefix("/admin/v1"), body)
    assert status == want

    async def raised() -> list[dict[str, Any]]:
        return await alerts_for(world, "canary-key-used")

    (alert,) = await eventually(raised, "a canary-key-used alert")
    assert alert["severity"] == "critical"
    assert alert["subject"] == {"kind": "credential", "id": canary.key.key_id}
    await world.settle()
    used = [
        e
        for e in world.events("admin.read")
        if e["credential_id"] == canary.key.key_id and e["data"].get("address")
    ]
    assert len(used) == 1
    assert used[0]["principal_id"] == canary.principal_id
    assert used[0]["data"] == {"method": method, "path": path, "address": "127.0.0.1"}


async def test_wrong_secrets_on_whoami_raise_a_refusal_burst(world: World) -> None:
    bad = wrong_secret(world.keys["carol"])
    for _ in range(19):
        status, _ = await admin_call(world, bad, "GET", "/whoami")
        assert status == 401
    await world.settle()
    await asyncio.sleep(0.3)
    assert await alerts_for(world, "refusal-burst") == []  # under the threshold of 20
    status, _ = await admin_call(world, bad, "GET", "/whoami")
    assert status == 401

    async def raised() -> list[dict[str, Any]]:
        return await alerts_for(world, "refusal-burst")

    (alert,) = await eventually(raised, "a refusal-burst alert")
    assert alert["subject"] == {"kind": "credential", "id": key_id(world.keys["carol"])}
    assert alert["data"]["refusals"] == 20
    denied = [
        e
        for e in world.events("admin.denied")
        if e["data"].get("presented_key_id") == key_id(world.keys["carol"])
    ]
    assert len(denied) == 20
    assert sorted(alert["evidence"]) == sorted(e["i"] for e in denied)


async def test_malformed_keys_on_whoami_raise_a_refusal_burst_on_the_address(
    world: World,
) -> None:
    for n in range(20):
        status, _ = await admin_call(world, f"not-a-key-{n}", "GET", "/whoami")
        assert status == 401

    async def raised() -> list[dict[str, Any]]:
        return await alerts_for(world, "refusal-burst")

    (alert,) = await eventually(raised, "a refusal-burst alert")
    assert alert["subject"] == {"kind": "address", "id": "127.0.0.1"}


# ── 5: asking for access reveals nothing ──────────────────────────────────────────────────
async def test_asking_for_access_is_one_404_for_every_unreachable_model(admins: Admins) -> None:
    w = admins.world
    # bob (contractor-co, ceiling internal) cleared critical behind the vendor's back.
    sql(w, "UPDATE principals SET clearance = ? WHERE name = 'bob'", int(Level.CRITICAL))
    await w.reload()
    oracle_id = admins.model("oracle").id
    carol, bob = w.keys["carol"], w.keys["bob"]
    cases = [
        (admins.ivan, "no-such-model", HOUR),  # does not exist
        (admins.ivan, "assistant", HOUR),  # internal: needs no grant
        (admins.ivan, "cyber-model", HOUR),  # restricted: needs no grant
        (admins.ivan, "cyber-oracle", HOUR),  # critical, a compartment ivan lacks
        (carol, "oracle", HOUR),  # critical, above carol's clearance
        (carol, oracle_id, HOUR),  # the same, by id
        (bob, "oracle", HOUR),  # critical, above bob's vendor's ceiling
        (carol, "oracle", 9 * HOUR),  # an invalid duration does not tell the level either
        (carol, "no-such-model", 9 * HOUR),
    ]
    before = count(w, "access_requests")
    answers = set()
    for key, model, duration in cases:
        error = await admins.refused(
            key,
            "POST",
            "/access/requests",
            {"model": model, "duration_s": duration, "reason": "INC-9"},
            status=404,
        )
        assert error["type"] == "not_found", (model, error)
        for telling in (model, "critical", "restricted", "internal", "ceiling", "clearance"):
            assert telling not in error["message"], (model, error)
        answers.add(tuple(sorted((k, v) for k, v in error.items() if k != "request_id")))
    assert len(answers) == 1
    assert count(w, "access_requests") == before
    # A critical model the caller dominates: asked for.
    created = await admins.ok(
        admins.ivan,
        "POST",
        "/access/requests",
        {"model": "oracle", "duration_s": HOUR, "reason": "INC-9"},
        want=201,
    )
    assert created["status"] == "pending" and created["model"] == "oracle"
    # ... where a bad duration is then a plain 400.
    await admins.refused(
        admins.ivan,
        "POST",
        "/access/requests",
        {"model": "oracle", "duration_s": 9 * HOUR, "reason": "INC-9"},
        status=400,
    )


# ── 9: admin reads are durable before they are answered ───────────────────────────────────
@pytest.mark.parametrize(
    ("path", "secret"),
    [("/vendors", "contractor-co"), ("/principals", "alice")],
    ids=["vendors", "principals"],
)
async def test_an_admin_read_is_503_while_the_audit_log_cannot_be_written(
    world: World, path: str, secret: str
) -> None:
    await world.settle()
    async with aiohttp.ClientSession() as session:
        with hold_write_lock(world.db_path):
            async with session.get(
                f"{world.base}/admin/v1{path}",
                headers={"authorization": f"Bearer {world.admin_key}"},
            ) as resp:
                status, raw = resp.status, await resp.read()
    assert status == 503, raw
    assert secret.encode() not in raw
    assert b"audit_unavailable" in raw
    # Once the log is writable again (found by the writer's background probe within a few
    # probe intervals), the same read answers.
    deadline = time.monotonic() + 5
    while True:
        status, body = await admin_call(world, world.admin_key, "GET", path)
        if status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    assert secret in repr(body)
