"""The Cedar engine on the data plane, through the running gateway: what denials record, the
justification header, the models list, grants, organisation policies, and an engine rebuilt
with every snapshot (so no decision made under older facts is ever served)."""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.domain import AuthStyle, Level, Model, Principal, Reason, UpstreamApi
from garrison.gateway.caller_text import JUSTIFICATION_HEADER, JUSTIFICATION_MAX_CHARS
from garrison.policy.context import call_context
from garrison.policy.reference import reference_reasons
from garrison.store.changes import set_policy
from tests.support.world import UPSTREAM_KEY, World, start_world, stop_world

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
# The expiring grant's life on the gateway's clock (passed by moving that clock, not waited).
GRANT_S = 60.0


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    request_id: str


async def chat(
    world: World,
    who: str,
    model: str = "assistant",
    *,
    justification: str | None = None,
) -> Reply:
    headers = {"authorization": f"Bearer {world.keys[who]}", "content-type": "application/json"}
    if justification is not None:
        headers[JUSTIFICATION_HEADER] = justification
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": model, "messages": USER}),
            headers=headers,
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


async def listed(world: World, who: str, headers: Mapping[str, str] | None = None) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            world.base + "/v1/models",
            headers={"authorization": f"Bearer {world.keys[who]}", **(headers or {})},
        ) as resp,
    ):
        assert resp.status == 200, await resp.read()
        return [m["id"] for m in orjson.loads(await resp.read())["data"]]


async def event_of(world: World, name: str, reply: Reply) -> dict[str, Any]:
    await world.settle()
    (event,) = [e for e in world.events(name) if e["request_id"] == reply.request_id]
    return event


def sql(world: World, statement: str, *params: Any) -> None:
    """A write around the directory (this field has no admin API)."""
    conn = sqlite3.connect(world.db_path, timeout=10)
    try:
        with conn:
            conn.execute(statement, params)
    finally:
        conn.close()


def principal(world: World, name: str) -> Principal:
    (found,) = [p for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    return found


def model(world: World, name: str) -> Model:
    return world.gateway.state.snapshot.models[name]


async def require_justification(world: World, name: str = "assistant") -> None:
    sql(world, "UPDATE models SET requires_justification = 1 WHERE name = ?", name)
    await world.reload()
    assert model(world, name).requires_justification


async def add_critical_model(world: World, name: str = "vault") -> None:
    """A critical model, and alice cleared for it (a grant is still needed)."""
    now = time.time()
    world.directory.create_model(
        name,
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        level=Level.CRITICAL,
        upstream_url=model(world, "assistant").upstream_url,
        auth_style=AuthStyle.BEARER,
        upstream_key=UPSTREAM_KEY,
        now=now,
    )
    world.directory.update_principal("alice", now=now, clearance=Level.CRITICAL)
    await world.reload()


def add_grant(world: World, who: str, what: str, *, expires_in: float) -> None:
    now = time.time()
    sql(
        world,
        "INSERT INTO grants (id, request_id, principal_id, model_id, starts_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        f"grt_{uuid.uuid4().hex[:12]}",
        f"req_{uuid.uuid4().hex[:12]}",
        principal(world, who).id,
        model(world, what).id,
        now - 1,
        now + expires_in,
    )


# ── denials record their reasons and policies ──────────────────────────────────────────────
async def test_a_denial_records_its_reasons_and_policies(world: World) -> None:
    reply = await chat(world, "carol", "cyber-model")
    assert reply.status == 404
    event = await event_of(world, "request.denied", reply)
    assert event["data"]["status"] == 404
    assert event["data"]["reasons"] == ["clearance.level", "clearance.compartment"]
    assert event["data"]["policies"] == ["forbid-clearance-compartment", "forbid-clearance-level"]
    assert event["model"] == "cyber-model"
    assert event["principal_id"] == principal(world, "carol").id
    assert world.mock.seen == []


async def test_a_vendor_denial_names_the_ceiling(world: World) -> None:
    reply = await chat(world, "bob", "cyber-model")
    assert reply.status == 404
    event = await event_of(world, "request.denied", reply)
    assert event["data"]["reasons"] == [
        "clearance.level",
        "clearance.compartment",
        "vendor.ceiling",
    ]
    assert event["data"]["policies"] == [
        "forbid-clearance-compartment",
        "forbid-clearance-level",
        "forbid-vendor-ceiling",
    ]


async def test_an_allowed_call_records_the_permit(world: World) -> None:
    reply = await chat(world, "alice", "cyber-model")
    assert reply.status == 200, reply.body
    event = await event_of(world, "request.allowed", reply)
    assert event["data"]["reasons"] == ["allowed"]
    assert event["data"]["policies"] == ["permit-dominance"]
    assert "justification" not in event["data"]


async def test_a_denied_model_looks_like_an_unknown_one(world: World) -> None:
    denied = await chat(world, "carol", "cyber-model")
    unknown = await chat(world, "carol", "no-such-model")
    assert denied.status == unknown.status == 404
    assert denied.body == unknown.body


async def test_an_org_forbid_is_recorded_with_its_id(world: World) -> None:
    text = (
        '@id("no-carol") forbid (principal, action, resource) when { principal.name == "carol" };'
    )
    version = set_policy(world.directory, text, now=time.time(), proposed_by="test")
    await world.reload()
    assert world.gateway.state.policy is not None
    assert world.gateway.state.policy.compiled.version == version
    reply = await chat(world, "carol")
    assert reply.status == 404
    event = await event_of(world, "request.denied", reply)
    assert event["data"]["reasons"] == ["policy.forbid"]
    assert event["data"]["policies"] == ["no-carol"]
    assert "assistant" not in await listed(world, "carol")
    # Others are untouched.
    assert (await chat(world, "alice")).status == 200


async def test_an_invalid_policy_set_leaves_the_last_valid_one_in_force(world: World) -> None:
    text = (
        '@id("no-carol") forbid (principal, action, resource) when { principal.name == "carol" };'
    )
    version = set_policy(world.directory, text, now=time.time(), proposed_by="test")
    await world.reload()
    # A set that never passed validation (a hand edit, a restore): refused, loudly.
    set_policy(world.directory, "forbid (principal action", now=time.time(), proposed_by="x")
    await world.reload()
    assert world.gateway.state.snapshot.policy_version == version + 1
    assert world.gateway.state.policy is not None
    assert world.gateway.state.policy.compiled.version == version
    assert (await chat(world, "carol")).status == 404
    assert (await chat(world, "alice")).status == 200


# ── justification ──────────────────────────────────────────────────────────────────────────
async def test_a_model_requiring_justification_refuses_a_call_without_it(world: World) -> None:
    await require_justification(world)
    for header in (None, "", "   "):
        reply = await chat(world, "carol", justification=header)
        assert reply.status == 404, header
        event = await event_of(world, "request.denied", reply)
        assert event["data"]["reasons"] == ["justification.required"]
        assert event["data"]["policies"] == ["forbid-missing-justification"]
    assert world.mock.seen == []
    # Other models are not affected.
    assert (await chat(world, "alice", "cyber-model")).status == 200


async def test_a_justified_call_is_allowed_and_the_reason_kept(world: World) -> None:
    await require_justification(world)
    reply = await chat(world, "carol", justification="  INC-4711: triage the phishing wave ")
    assert reply.status == 200, reply.body
    event = await event_of(world, "request.allowed", reply)
    assert event["data"]["justification"] == "INC-4711: triage the phishing wave"
    assert event["data"]["policies"] == ["permit-dominance"]
    # The justification is for the log, not for the upstream.
    (seen,) = world.mock.seen
    assert JUSTIFICATION_HEADER not in {k.lower() for k in seen.headers}
    assert b"INC-4711" not in seen.body


async def test_a_justification_at_the_limit_is_kept_whole(world: World) -> None:
    await require_justification(world)
    text = "j" * JUSTIFICATION_MAX_CHARS
    reply = await chat(world, "carol", justification=text)
    assert reply.status == 200, reply.body
    event = await event_of(world, "request.allowed", reply)
    assert event["data"]["justification"] == text


async def test_an_over_long_justification_is_400(world: World) -> None:
    await require_justification(world)
    for who, what in (("carol", "assistant"), ("alice", "cyber-model")):
        reply = await chat(world, who, what, justification="j" * (JUSTIFICATION_MAX_CHARS + 1))
        assert reply.status == 400, reply.body
        assert str(JUSTIFICATION_MAX_CHARS) in orjson.loads(reply.body)["error"]["message"]
        event = await event_of(world, "request.denied", reply)
        assert event["data"]["reasons"] == ["request.malformed"]
        assert event["data"]["status"] == 400
        assert "justification" not in event["data"]
    assert world.mock.seen == []
    await world.settle()
    assert world.events("request.allowed") == []


async def test_a_justification_is_kept_even_where_not_required(world: World) -> None:
    reply = await chat(world, "alice", "cyber-model", justification="weekly report")
    assert reply.status == 200
    event = await event_of(world, "request.allowed", reply)
    assert event["data"]["justification"] == "weekly report"


# ── the models list ────────────────────────────────────────────────────────────────────────
def usable(world: World, who: str, *, justification: bool) -> set[str]:
    """The models ``who`` may use, by the reference rules (not by Cedar)."""
    snap = world.gateway.state.snapshot
    p = principal(world, who)
    org = snap.orgs[p.org_id]
    (credential,) = [
        c for c in snap.credentials.values() if world.keys[who].split("_", 2)[1] == c.id
    ]
    now = time.time()
    return {
        m.name
        for m in snap.models.values()
        if not reference_reasons(
            p,
            m,
            call_context(snap, p, m, credential, LOOPBACK, now, justification=justification),
            vendor=org.vendor is not None,
        )
    }


async def test_the_models_list_is_exactly_what_the_caller_may_use(world: World) -> None:
    await add_critical_model(world)
    await require_justification(world)
    for who in ("alice", "bob", "carol"):
        names = await listed(world, who)
        assert names == sorted(names)
        assert set(names) == usable(world, who, justification=True), who
        anthropic = await listed(world, who, {"anthropic-version": "2023-06-01"})
        assert anthropic == names
    assert "cyber-model" in await listed(world, "alice")
    assert "cyber-model" not in await listed(world, "carol")
    assert "cyber-model" not in await listed(world, "bob")
    # A model that requires a justification is listed (usable by sending one), and calls
    # without it are still refused.
    assert "assistant" in await listed(world, "carol")
    assert (await chat(world, "carol")).status == 404
    # No grant yet: the critical model is not listed even for a cleared principal.
    assert "vault" not in await listed(world, "alice")


async def test_listed_models_answer_and_unlisted_ones_are_404(world: World) -> None:
    await add_critical_model(world)
    for who in ("alice", "bob", "carol"):
        names = set(await listed(world, who))
        for name in ("assistant", "cyber-model", "vault"):
            reply = await chat(world, who, name)
            assert (reply.status == 200) == (name in names), (who, name, reply.status)
            if name not in names:
                assert reply.status == 404


# ── grants ─────────────────────────────────────────────────────────────────────────────────
async def test_a_critical_model_needs_a_grant(world: World) -> None:
    await add_critical_model(world)
    reply = await chat(world, "alice", "vault")
    assert reply.status == 404
    event = await event_of(world, "request.denied", reply)
    assert event["data"]["reasons"] == ["grant.required"]
    assert event["data"]["policies"] == ["forbid-critical-without-grant"]
    add_grant(world, "alice", "vault", expires_in=3600)
    await world.reload()
    assert "vault" in await listed(world, "alice")
    reply = await chat(world, "alice", "vault")
    assert reply.status == 200, reply.body
    # A grant for alice is no grant for anyone else.
    other = await chat(world, "carol", "vault")
    assert other.status == 404
    event = await event_of(world, "request.denied", other)
    assert "grant.required" in event["data"]["reasons"]


async def test_an_expiring_grant_stops_allowing_without_a_reload(tmp_path: Path) -> None:
    # The grant's end is passed on the gateway's clock, not waited for: a 1 s grant and a
    # 1.1 s sleep assumed the set-up and the first call took less than a second.
    skew = [0.0]
    world = await start_world(tmp_path, clock=lambda: time.time() + skew[0])
    try:
        await add_critical_model(world)
        add_grant(world, "alice", "vault", expires_in=GRANT_S)
        await world.reload()
        engine = world.gateway.state.policy
        assert (await chat(world, "alice", "vault")).status == 200
        skew[0] = GRANT_S + 1.0
        reply = await chat(world, "alice", "vault")
        assert reply.status == 404
        assert world.gateway.state.policy is engine  # same engine: the cache did not answer
        event = await event_of(world, "request.denied", reply)
        assert event["data"]["reasons"] == ["grant.required"]
        assert "vault" not in await listed(world, "alice")
    finally:
        await stop_world(world)


# ── the engine follows the snapshot ────────────────────────────────────────────────────────
async def test_a_raised_clearance_takes_effect_on_reload(world: World) -> None:
    assert (await chat(world, "carol", "cyber-model")).status == 404
    before = world.gateway.state.policy
    assert before is not None
    assert before.cached >= 1  # the denial is cached in this engine
    world.directory.update_principal(
        "carol", now=time.time(), clearance=Level.RESTRICTED, compartments=["cyber"]
    )
    await world.reload()
    after = world.gateway.state.policy
    assert after is not None
    assert after is not before
    reply = await chat(world, "carol", "cyber-model")
    assert reply.status == 200, reply.body
    event = await event_of(world, "request.allowed", reply)
    assert event["data"]["policies"] == ["permit-dominance"]
    assert "cyber-model" in await listed(world, "carol")


async def test_a_lowered_clearance_is_never_served_from_an_old_decision(world: World) -> None:
    for _ in range(3):
        assert (await chat(world, "alice", "cyber-model")).status == 200
    world.directory.update_principal("alice", now=time.time(), clearance=Level.INTERNAL)
    await world.reload()
    reply = await chat(world, "alice", "cyber-model")
    assert reply.status == 404
    event = await event_of(world, "request.denied", reply)
    assert event["data"]["reasons"] == [Reason.CLEARANCE_LEVEL.value]
    assert "cyber-model" not in await listed(world, "alice")


async def test_the_watcher_alone_rebuilds_the_engine(world: World) -> None:
    # No explicit reload: the change feed brings the new snapshot (and engine) within ticks.
    assert (await chat(world, "carol", "cyber-model")).status == 404
    before = world.gateway.state.policy
    world.directory.update_principal(
        "carol", now=time.time(), clearance=Level.RESTRICTED, compartments=["cyber"]
    )
    deadline = time.monotonic() + 5
    while world.gateway.state.policy is before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert world.gateway.state.policy is not before
    assert (await chat(world, "carol", "cyber-model")).status == 200
