"""Just-in-time access, two-person changes and the policy set, over HTTP against a running
gateway, with the data plane and the audit log as witnesses.

Access: anyone asks for their own access; approvers (the role, not a security-admin as such)
approve; two approvals (the vendor's sponsor among them for a vendor's person) open the
critical model at once, and revoking the grant closes it at once. Changes: raising access,
lowering a model and replacing the policy set answer 202 and wait for a second, different
security-admin; lowering access and disabling apply at once. Policy: a pushed and approved
forbid is enforced on the next call, with its id in the audit log; explain tells why.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.domain import Level
from tests.support import db
from tests.support.admin import Admins, admin_call, make_admin
from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hello"}]
HOUR = 3600.0
FORBID_CAROL = """
@id("no-carol-on-assistant")
forbid (principal, action == Garrison::Action::"invoke", resource)
when { principal.name == "carol" && resource.name == "assistant" };
"""


# ── calling ──────────────────────────────────────────────────────────────────────────────
async def chat(world: World, key: str, model: str) -> tuple[int, Any]:
    """One chat call on the data plane; the status and the decoded body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + CHAT,
            data=orjson.dumps({"model": model, "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def count(world: World, table: str) -> int:
    """Rows in ``table`` (on either database)."""
    (found,) = db.rows(world.directory, f"SELECT count(*) AS n FROM {table}")  # noqa: S608
    return int(found["n"])


@dataclass
class Jit:
    """A world with a critical model and the people a just-in-time flow needs."""

    world: World
    ivan: str  # an internal principal cleared critical, no admin role (the requester)
    appr_1: str  # approvers (internal)
    appr_2: str
    sec_2: str  # a second security-admin (no approver role)
    sec_3: str  # a third one

    @property
    def admin(self) -> str:
        return self.world.admin_key

    @property
    def carol(self) -> str:
        return self.world.keys["carol"]

    @property
    def bob(self) -> str:
        return self.world.keys["bob"]

    async def api(
        self, key: str, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        return await admin_call(self.world, key, method, path, body, **kw)

    async def ok(self, key: str, method: str, path: str, body: Any = None, want: int = 200) -> Any:
        status, answer = await self.api(key, method, path, body)
        assert status == want, (method, path, status, answer)
        return answer

    async def refused(
        self, key: str, method: str, path: str, body: Any = None, *, status: int
    ) -> dict[str, Any]:
        got, answer = await self.api(key, method, path, body)
        assert got == status, (method, path, got, answer)
        assert set(answer) == {"error"}, answer
        return dict(answer["error"])

    async def ask(self, key: str, model: str = "oracle", hours: float = 2) -> dict[str, Any]:
        body = {"model": model, "duration_s": hours * HOUR, "reason": "INC-7 triage"}
        created: dict[str, Any] = await self.ok(key, "POST", "/access/requests", body, want=201)
        return created

    async def approve(self, key: str, request_id: str) -> dict[str, Any]:
        done: dict[str, Any] = await self.ok(
            key, "POST", f"/access/requests/{request_id}/approve", {}
        )
        return done

    def principal(self, name: str) -> Any:
        snap = self.world.gateway.state.snapshot
        return next(p for p in snap.principals.values() if p.name == name)

    def model(self, name: str) -> Any:
        return self.world.gateway.state.snapshot.models[name]

    async def denied_event(self, request_id: str) -> dict[str, Any]:
        await self.world.settle()
        found = [e for e in self.world.events("request.denied") if e["request_id"] == request_id]
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
async def jit(world: World) -> AsyncIterator[Jit]:
    ivan = make_admin(world, "ivan", [], clearance=Level.CRITICAL)
    appr_1 = make_admin(world, "appr-1", ["approver"])
    appr_2 = make_admin(world, "appr-2", ["approver"])
    sec_2 = make_admin(world, "sec-2", ["security-admin"])
    sec_3 = make_admin(world, "sec-3", ["security-admin"])
    await world.reload()  # the set-up above was written directly
    j = Jit(world, ivan, appr_1, appr_2, sec_2, sec_3)
    # The critical model, through the admin API, forwarding like the seeded "assistant".
    assistant = await j.ok(j.admin, "GET", "/models/assistant")
    body = {
        "name": "oracle",
        "upstream_url": assistant["upstream_url"],
        "upstream_model": "mock-small",
        "api": "openai",
        "auth_style": "bearer",
        "upstream_key": UPSTREAM_KEY,
        "level": "critical",
    }
    # A critical model takes two admins: one proposes, a second approves.
    proposal = await j.ok(j.admin, "POST", "/models", body, want=202)
    await j.ok(j.sec_2, "POST", f"/changes/{proposal['pending']['id']}/approve", {})
    yield j


# ── access for an internal principal ─────────────────────────────────────────────────────
async def test_internal_flow_request_two_approvals_grant_revoke(jit: Jit) -> None:
    w = jit.world
    status, _ = await chat(w, jit.ivan, "oracle")
    assert status == 404  # cleared critical, but no grant yet

    created = await jit.ask(jit.ivan, hours=2)
    assert created["status"] == "pending" and created["model"] == "oracle"
    assert created["principal_id"] == jit.principal("ivan").id
    rid = created["id"]
    first = await jit.approve(jit.appr_1, rid)
    assert first["status"] == "pending" and first["grant_id"] is None
    status, _ = await chat(w, jit.ivan, "oracle")
    assert status == 404  # one approval is not enough

    second = await jit.approve(jit.appr_2, rid)
    assert second["status"] == "approved"
    assert second["approvals"] == [jit.principal("appr-1").id, jit.principal("appr-2").id]
    status, answer = await chat(w, jit.ivan, "oracle")
    assert status == 200, answer  # at once
    assert answer["choices"][0]["message"]["content"]

    (grant,) = await jit.ok(jit.ivan, "GET", "/access/grants")
    assert grant["id"] == second["grant_id"]
    assert grant["state"] == "active" and grant["principal"] == "ivan"
    assert grant["model"] == "oracle" and grant["request_id"] == rid
    assert grant["expires_at"] - grant["starts_at"] == pytest.approx(2 * HOUR)
    mine = await jit.ok(jit.ivan, "GET", "/access/requests")
    assert [(r["id"], r["status"]) for r in mine] == [(rid, "approved")]

    # someone else cannot end it; the holder can, with a reason, and it ends at once
    await jit.refused(
        jit.carol, "POST", f"/access/grants/{grant['id']}/revoke", {"reason": "x"}, status=404
    )
    await jit.refused(jit.ivan, "POST", f"/access/grants/{grant['id']}/revoke", {}, status=400)
    revoked = await jit.ok(
        jit.ivan, "POST", f"/access/grants/{grant['id']}/revoke", {"reason": "done"}
    )
    assert revoked == {"id": grant["id"], "status": "revoked"}
    status, _ = await chat(w, jit.ivan, "oracle")
    assert status == 404
    (grant,) = await jit.ok(jit.ivan, "GET", "/access/grants")
    assert grant["state"] == "revoked"

    await w.settle()
    names = [e["name"] for e in w.events() if e["name"].startswith(("access.", "grant."))]
    assert names == [
        "access.requested",
        "access.approved",
        "access.approved",
        "access.granted",
        "grant.revoked",
    ]
    (requested,) = w.events("access.requested")
    assert requested["actor"] == jit.principal("ivan").id
    assert requested["data"]["origin"]["via"] == "admin-api"


async def test_an_approver_revokes_anyones_grant(jit: Jit) -> None:
    rid = (await jit.ask(jit.ivan))["id"]
    await jit.approve(jit.appr_1, rid)
    grant_id = (await jit.approve(jit.appr_2, rid))["grant_id"]
    assert (await chat(jit.world, jit.ivan, "oracle"))[0] == 200
    # a security-admin may revoke any grant too
    await jit.ok(jit.sec_2, "POST", f"/access/grants/{grant_id}/revoke", {"reason": "incident"})
    assert (await chat(jit.world, jit.ivan, "oracle"))[0] == 404
    error = await jit.refused(
        jit.appr_1, "POST", f"/access/grants/{grant_id}/revoke", {"reason": "x"}, status=409
    )
    assert "already ended" in error["message"]


async def test_request_refusals_over_http(jit: Jit) -> None:
    before = count(jit.world, "access_requests")
    # carol (internal clearance) does not dominate the critical model (a grant never raises a
    # clearance), an ordinary model needs no grant, a name may not exist: one answer for all
    # three, so asking reveals nothing about which models exist or at what level.
    answers = []
    for who, model in ((jit.carol, "oracle"), (jit.ivan, "assistant"), (jit.ivan, "no-such")):
        error = await jit.refused(
            who,
            "POST",
            "/access/requests",
            {"model": model, "duration_s": HOUR, "reason": "x"},
            status=404,
        )
        answers.append((error["type"], error["message"]))
    assert len(set(answers)) == 1
    # more than 8 hours, no time, no reason: refused
    for body in (
        {"model": "oracle", "duration_s": 9 * HOUR, "reason": "x"},
        {"model": "oracle", "duration_s": 0, "reason": "x"},
        {"model": "oracle", "duration_s": HOUR},
    ):
        await jit.refused(jit.ivan, "POST", "/access/requests", body, status=400)
    assert count(jit.world, "access_requests") == before
    first = await jit.ask(jit.ivan)
    error = await jit.refused(
        jit.ivan,
        "POST",
        "/access/requests",
        {"model": "oracle", "duration_s": HOUR, "reason": "again"},
        status=409,
    )
    assert first["id"] in error["message"]


async def test_cancel_and_deny(jit: Jit) -> None:
    rid = (await jit.ask(jit.ivan))["id"]
    # only the requester cancels; to anyone else it does not exist
    await jit.refused(jit.appr_1, "POST", f"/access/requests/{rid}/cancel", {}, status=404)
    cancelled = await jit.ok(jit.ivan, "POST", f"/access/requests/{rid}/cancel", {})
    assert cancelled == {"id": rid, "status": "cancelled"}
    rid = (await jit.ask(jit.ivan))["id"]
    await jit.refused(jit.appr_1, "POST", f"/access/requests/{rid}/deny", {}, status=400)
    await jit.refused(jit.ivan, "POST", f"/access/requests/{rid}/deny", {"reason": "x"}, status=403)
    denied = await jit.ok(jit.appr_1, "POST", f"/access/requests/{rid}/deny", {"reason": "no"})
    assert denied == {"id": rid, "status": "denied"}
    error = await jit.refused(jit.appr_2, "POST", f"/access/requests/{rid}/approve", {}, status=400)
    assert error["type"] == "illegal_transition" and error["rule"] == "access-lifecycle"
    rows = await jit.ok(jit.ivan, "GET", "/access/requests")
    assert [r["status"] for r in rows] == ["denied", "cancelled"]
    assert rows[0]["decision_reason"] == "no"
    assert (await chat(jit.world, jit.ivan, "oracle"))[0] == 404


# ── access for a vendor's principal: the sponsor rule ────────────────────────────────────
async def test_vendor_flow_needs_the_sponsor(jit: Jit) -> None:
    w = jit.world
    # Widening the vendor's ceiling applies at once (only narrowing access waits).
    answer = await jit.ok(jit.admin, "PATCH", "/vendors/contractor-co", {"ceiling": "critical"})
    assert "pending" not in answer
    vendor = next(o for o in w.gateway.state.snapshot.orgs.values() if o.name == "contractor-co")
    assert vendor.vendor is not None and vendor.vendor.ceiling_level is Level.CRITICAL
    # Set-up: bob cleared critical, and the sponsor ("admin") made an approver.
    now = time.time()
    w.directory.update_principal("bob", clearance=Level.CRITICAL, now=now)
    w.directory.update_principal("admin", roles=["security-admin", "approver"], now=now)
    await w.reload()
    assert (await chat(w, jit.bob, "oracle"))[0] == 404

    rid = (await jit.ask(jit.bob))["id"]
    await jit.approve(jit.appr_1, rid)
    two = await jit.approve(jit.appr_2, rid)
    # two distinct internal approvers, but not the vendor's sponsor: still pending
    assert two["status"] == "pending" and two["grant_id"] is None
    assert len(two["approvals"]) == 2
    assert (await chat(w, jit.bob, "oracle"))[0] == 404
    waiting = await jit.ok(jit.admin, "GET", "/approvals")
    assert [r["id"] for r in waiting["access_requests"]] == [rid]

    done = await jit.approve(jit.admin, rid)
    assert done["status"] == "approved" and done["grant_id"]
    assert done["approvals"][-1] == jit.principal("admin").id
    status, answer = await chat(w, jit.bob, "oracle")
    assert status == 200, answer


async def test_vendor_sponsor_and_one_approver_suffice(jit: Jit) -> None:
    w = jit.world
    await jit.ok(jit.admin, "PATCH", "/vendors/contractor-co", {"ceiling": "critical"})
    now = time.time()
    w.directory.update_principal("bob", clearance=Level.CRITICAL, now=now)
    w.directory.update_principal("admin", roles=["security-admin", "approver"], now=now)
    await w.reload()
    rid = (await jit.ask(jit.bob, hours=1))["id"]
    assert (await jit.approve(jit.admin, rid))["status"] == "pending"
    assert (await jit.approve(jit.appr_2, rid))["status"] == "approved"
    assert (await chat(w, jit.bob, "oracle"))[0] == 200


# ── who may approve ──────────────────────────────────────────────────────────────────────
async def test_approvals_listing(jit: Jit) -> None:
    rid = (await jit.ask(jit.ivan))["id"]
    for key in (jit.appr_1, jit.appr_2):
        waiting = await jit.ok(key, "GET", "/approvals")
        assert [r["id"] for r in waiting["access_requests"]] == [rid]
        assert waiting["changes"] == []  # an approver decides no changes
    # the requester, a principal without roles, a security-admin without the approver role
    for key in (jit.ivan, jit.carol, jit.sec_2):
        assert await jit.ok(key, "GET", "/approvals") == {"access_requests": [], "changes": []}
    await jit.approve(jit.appr_1, rid)
    assert (await jit.ok(jit.appr_1, "GET", "/approvals"))["access_requests"] == []
    (row,) = (await jit.ok(jit.appr_2, "GET", "/approvals"))["access_requests"]
    assert row["approvals"] == [jit.principal("appr-1").id]
    # a change proposed by one security-admin awaits the others, not its proposer
    proposal = await jit.ok(
        jit.admin, "PATCH", "/principals/carol", {"clearance": "restricted"}, want=202
    )
    change_id = proposal["pending"]["id"]
    assert [c["id"] for c in (await jit.ok(jit.sec_2, "GET", "/approvals"))["changes"]] == [
        change_id
    ]
    assert (await jit.ok(jit.admin, "GET", "/approvals"))["changes"] == []
    # listing requests: one's own, or everyone's with the right to read them
    assert [r["id"] for r in await jit.ok(jit.appr_2, "GET", "/access/requests")] == [rid]
    assert await jit.ok(jit.appr_2, "GET", "/access/requests?mine=true") == []
    assert await jit.ok(jit.carol, "GET", "/access/requests") == []


async def test_who_may_not_approve(jit: Jit) -> None:
    w = jit.world
    rid = (await jit.ask(jit.ivan))["id"]
    cases = [
        (jit.carol, "admin.no_role"),  # no role at all
        (jit.sec_2, "admin.role_lacks_action"),  # a security-admin is not an approver
        (jit.admin, "admin.role_lacks_action"),
        (jit.ivan, "admin.no_role"),  # and nobody approves their own
    ]
    for key, reason in cases:
        error = await jit.refused(key, "POST", f"/access/requests/{rid}/approve", {}, status=403)
        assert error["type"] == "forbidden", error
        await w.settle()
        event = next(e for e in w.events("admin.denied") if e["request_id"] == error["request_id"])
        assert event["data"]["reasons"] == [reason]
    (row,) = await jit.ok(jit.appr_1, "GET", "/access/requests")
    assert row["status"] == "pending" and row["approvals"] == []
    # an approver asking for themselves cannot approve their own request
    w.directory.update_principal("appr-1", clearance=Level.CRITICAL, now=time.time())
    await w.reload()
    own = (await jit.ask(jit.appr_1))["id"]
    error = await jit.refused(jit.appr_1, "POST", f"/access/requests/{own}/approve", {}, status=403)
    assert error["rule"] == "no-self-approval"
    # and the same approver counts once
    await jit.approve(jit.appr_2, rid)
    error = await jit.refused(jit.appr_2, "POST", f"/access/requests/{rid}/approve", {}, status=409)
    assert error["rule"] == "distinct-approvers"


# ── two-person changes ───────────────────────────────────────────────────────────────────
async def test_raising_a_clearance_waits_for_a_second_admin(jit: Jit) -> None:
    w = jit.world
    proposal = await jit.ok(
        jit.admin, "PATCH", "/principals/carol", {"clearance": "restricted"}, want=202
    )
    pending = proposal["pending"]
    assert set(proposal) == {"pending"}
    assert pending["status"] == "pending" and pending["kind"] == "principal-access"
    assert pending["target"] == jit.principal("carol").id
    assert pending["requested_by"] == jit.principal("admin").id
    assert jit.principal("carol").clearance is Level.INTERNAL  # not applied
    assert (await chat(w, jit.carol, "cyber-model"))[0] == 404
    (listed,) = await jit.ok(jit.sec_2, "GET", "/changes")
    assert listed["id"] == pending["id"]

    # the proposer cannot be the second admin; an approver is no security-admin
    error = await jit.refused(
        jit.admin, "POST", f"/changes/{pending['id']}/approve", {}, status=403
    )
    assert error["rule"] == "two-person"
    await jit.refused(jit.appr_1, "POST", f"/changes/{pending['id']}/approve", {}, status=403)
    assert jit.principal("carol").clearance is Level.INTERNAL

    applied = await jit.ok(jit.sec_2, "POST", f"/changes/{pending['id']}/approve", {})
    assert applied == {
        "id": pending["id"],
        "status": "approved",
        "result": {"clearance": ["internal", "restricted"]},
    }
    assert jit.principal("carol").clearance is Level.RESTRICTED
    assert await jit.ok(jit.sec_2, "GET", "/changes") == []
    (done,) = [
        c for c in await jit.ok(jit.sec_2, "GET", "/changes?all=true") if c["id"] == pending["id"]
    ]
    assert done["status"] == "approved" and done["decided_by"] == jit.principal("sec-2").id
    # approved once: not again
    await jit.refused(jit.sec_3, "POST", f"/changes/{pending['id']}/approve", {}, status=409)
    await w.settle()
    event = w.events("principal.updated")[-1]
    assert event["actor"] == jit.principal("sec-2").id
    assert event["data"]["origin"]["change_id"] == pending["id"]
    assert event["data"]["origin"]["requested_by"] == jit.principal("admin").id


@pytest.mark.parametrize(
    "body",
    [{"compartments": ["cyber"]}, {"roles": ["approver"]}, {"clearance": "critical"}],
    ids=["compartment", "role", "clearance"],
)
async def test_every_widening_of_access_waits(jit: Jit, body: dict[str, Any]) -> None:
    before = jit.principal("carol")
    await jit.ok(jit.admin, "PATCH", "/principals/carol", body, want=202)
    after = jit.principal("carol")
    assert (after.clearance, after.compartments, after.roles) == (
        before.clearance,
        before.compartments,
        before.roles,
    )


async def test_the_second_admin_cannot_approve_a_change_to_themselves(jit: Jit) -> None:
    proposal = await jit.ok(
        jit.admin, "PATCH", "/principals/sec-2", {"clearance": "restricted"}, want=202
    )
    change_id = proposal["pending"]["id"]
    error = await jit.refused(jit.sec_2, "POST", f"/changes/{change_id}/approve", {}, status=403)
    assert error["rule"] == "no-self-change"
    assert jit.principal("sec-2").clearance is Level.INTERNAL
    await jit.ok(jit.sec_3, "POST", f"/changes/{change_id}/approve", {})
    assert jit.principal("sec-2").clearance is Level.RESTRICTED


async def test_a_denied_change_is_never_applied(jit: Jit) -> None:
    proposal = await jit.ok(
        jit.admin, "PATCH", "/principals/carol", {"clearance": "critical"}, want=202
    )
    change_id = proposal["pending"]["id"]
    denied = await jit.ok(jit.sec_2, "POST", f"/changes/{change_id}/deny", {})
    assert denied == {"id": change_id, "status": "denied"}
    await jit.refused(jit.sec_3, "POST", f"/changes/{change_id}/approve", {}, status=409)
    assert jit.principal("carol").clearance is Level.INTERNAL


async def test_lowering_a_model_waits_for_a_second_admin(jit: Jit) -> None:
    w = jit.world
    # not with a credential in the same call: a pending change is stored in the clear
    before = count(w, "pending_changes")
    error = await jit.refused(
        jit.admin,
        "PATCH",
        "/models/cyber-model",
        {"level": "internal", "upstream_key": "sk-new-0123456789"},
        status=400,
    )
    assert "separate call" in error["message"]
    assert count(w, "pending_changes") == before
    assert (await chat(w, jit.carol, "cyber-model"))[0] == 404

    proposal = await jit.ok(
        jit.admin, "PATCH", "/models/cyber-model", {"level": "internal"}, want=202
    )
    change_id = proposal["pending"]["id"]
    assert proposal["pending"]["kind"] == "model-update"
    assert jit.model("cyber-model").level is Level.RESTRICTED
    await jit.refused(jit.admin, "POST", f"/changes/{change_id}/approve", {}, status=403)
    applied = await jit.ok(jit.sec_2, "POST", f"/changes/{change_id}/approve", {})
    assert applied["result"]["level"] == ["restricted", "internal"]
    assert jit.model("cyber-model").level is Level.INTERNAL
    # removing a compartment waits too
    await jit.ok(jit.admin, "PATCH", "/models/cyber-model", {"compartments": []}, want=202)
    assert jit.model("cyber-model").compartments == frozenset({"cyber"})


async def test_narrowing_changes_apply_at_once(jit: Jit) -> None:
    w = jit.world
    pending_before = count(w, "pending_changes")
    lowered = await jit.ok(jit.admin, "PATCH", "/principals/alice", {"clearance": "internal"})
    assert lowered == {"changes": {"clearance": ["restricted", "internal"]}}
    assert jit.principal("alice").clearance is Level.INTERNAL
    assert (await chat(w, w.keys["alice"], "cyber-model"))[0] == 404
    dropped = await jit.ok(jit.admin, "PATCH", "/principals/alice", {"compartments": []})
    assert dropped["changes"]["compartments"] == [["cyber"], []]
    assert (await chat(w, jit.carol, "assistant"))[0] == 200
    disabled = await jit.ok(jit.admin, "PATCH", "/principals/carol", {"status": "disabled"})
    assert disabled["changes"]["status"] == ["active", "disabled"]
    assert (await chat(w, jit.carol, "assistant"))[0] == 401
    raised = await jit.ok(jit.admin, "PATCH", "/models/assistant", {"level": "restricted"})
    assert raised["changes"]["level"] == ["internal", "restricted"]
    assert jit.model("assistant").level is Level.RESTRICTED
    assert count(w, "pending_changes") == pending_before


# ── the policy set ───────────────────────────────────────────────────────────────────────
async def test_a_pushed_policy_is_enforced_once_a_second_admin_approves(jit: Jit) -> None:
    w = jit.world
    empty = await jit.ok(jit.admin, "GET", "/policy")
    assert empty["version"] == 0 and empty["text"] == ""
    proposal = await jit.ok(jit.admin, "POST", "/policy", {"text": FORBID_CAROL}, want=202)
    change_id = proposal["pending"]["id"]
    assert proposal["pending"]["kind"] == "policy-set"
    # proposed, not in force
    assert (await jit.ok(jit.admin, "GET", "/policy"))["version"] == 0
    assert (await chat(w, jit.carol, "assistant"))[0] == 200
    await jit.refused(jit.admin, "POST", f"/changes/{change_id}/approve", {}, status=403)

    await jit.ok(jit.sec_2, "POST", f"/changes/{change_id}/approve", {})
    shown = await jit.ok(jit.admin, "GET", "/policy")
    assert shown["version"] == 1 and shown["text"] == FORBID_CAROL
    assert shown["in_force_version"] == 1
    assert shown["proposed_by"] == jit.principal("admin").id
    assert shown["approved_by"] == jit.principal("sec-2").id

    # enforced at once: carol on the assistant is a 404 naming the organisation's policy
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            w.base + CHAT,
            data=orjson.dumps({"model": "assistant", "messages": USER}),
            headers={"authorization": f"Bearer {jit.carol}", "content-type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 404
        request_id = resp.headers["x-request-id"]
    event = await jit.denied_event(request_id)
    assert event["data"]["reasons"] == ["policy.forbid"]
    assert event["data"]["policies"] == ["no-carol-on-assistant"]
    # nobody else is touched
    assert (await chat(w, w.keys["alice"], "assistant"))[0] == 200
    assert (await chat(w, jit.carol, "m-fail-500"))[0] != 404
    (changed,) = w.events("policy.changed")
    assert changed["data"]["version"] == 1
    assert changed["data"]["origin"]["change_id"] == change_id


async def test_an_invalid_policy_is_refused_with_cedars_message(jit: Jit) -> None:
    w = jit.world
    before = (count(w, "pending_changes"), count(w, "policy_sets"))
    bad_attr = (
        'forbid (principal, action == Garrison::Action::"invoke", resource) '
        "when { principal.shoe_size > 3 };"
    )
    for text in ("forbid (principal, action, resource", bad_attr):
        error = await jit.refused(jit.admin, "POST", "/policy", {"text": text}, status=400)
        assert error["type"] == "invalid_policy"
        assert error["message"].startswith("policy set refused: ")
    assert "shoe_size" in error["message"]
    assert (count(w, "pending_changes"), count(w, "policy_sets")) == before
    assert (await jit.ok(jit.admin, "GET", "/policy"))["version"] == 0
    # pushing is a security-admin's: an approver may not
    await jit.refused(jit.appr_1, "POST", "/policy", {"text": FORBID_CAROL}, status=403)


async def test_explain(jit: Jit) -> None:
    allowed = await jit.ok(
        jit.admin, "POST", "/policy/explain", {"principal": "alice", "model": "cyber-model"}
    )
    assert allowed["decision"] == "allow"
    assert allowed["reasons"] == ["allowed"]
    assert allowed["policies"] == ["permit-dominance"]
    assert allowed["principal"] == "alice" and allowed["model"] == "cyber-model"
    assert allowed["errors"] == []

    low = await jit.ok(
        jit.admin, "POST", "/policy/explain", {"principal": "carol", "model": "cyber-model"}
    )
    assert low["decision"] == "deny"
    assert low["reasons"] == ["clearance.level", "clearance.compartment"]
    assert set(low["policies"]) == {"forbid-clearance-level", "forbid-clearance-compartment"}

    no_grant = await jit.ok(
        jit.admin, "POST", "/policy/explain", {"principal": "ivan", "model": "oracle"}
    )
    assert no_grant["decision"] == "deny"
    assert no_grant["reasons"] == ["grant.required"]
    assert no_grant["policies"] == ["forbid-critical-without-grant"]
    assert no_grant["context"]["grant"] is False

    rid = (await jit.ask(jit.ivan))["id"]
    await jit.approve(jit.appr_1, rid)
    await jit.approve(jit.appr_2, rid)
    granted = await jit.ok(
        jit.admin, "POST", "/policy/explain", {"principal": "ivan", "model": "oracle"}
    )
    assert granted["decision"] == "allow" and granted["context"]["grant"] is True

    # a vendor's person from outside the vendor's networks
    outside = await jit.ok(
        jit.admin,
        "POST",
        "/policy/explain",
        {"principal": "bob", "model": "assistant", "address": "192.0.2.7"},
    )
    assert outside["decision"] == "deny"
    assert "vendor.network_not_allowed" in outside["reasons"]
    assert "forbid-vendor-network" in outside["policies"]

    await jit.refused(
        jit.admin, "POST", "/policy/explain", {"principal": "nobody", "model": "oracle"}, status=404
    )
    await jit.refused(
        jit.appr_1, "POST", "/policy/explain", {"principal": "alice", "model": "oracle"}, status=403
    )


async def test_explain_without_an_address_assumes_an_allowed_one(jit: Jit) -> None:
    """``address`` is optional ("default: any allowed"): leaving it out must not turn the
    answer into a network refusal for a principal whose key and vendor are network-bound
    (bob's key and contractor-co both allow 127.0.0.0/8; his real calls from there pass)."""
    assert (await chat(jit.world, jit.bob, "assistant"))[0] == 200
    from_inside = await jit.ok(
        jit.admin,
        "POST",
        "/policy/explain",
        {"principal": "bob", "model": "assistant", "address": "127.0.0.1"},
    )
    assert from_inside["decision"] == "allow"
    anywhere = await jit.ok(
        jit.admin, "POST", "/policy/explain", {"principal": "bob", "model": "assistant"}
    )
    assert (anywhere["decision"], anywhere["reasons"]) == ("allow", ["allowed"]), anywhere


def sql(world: World, query: str, **params: Any) -> None:
    """A direct write to the database (behind the admin API's back)."""
    db.sql(world.directory, query, **params)


# ── asking for access reveals nothing ─────────────────────────────────────────────────────
async def test_asking_for_access_is_one_404_for_every_unreachable_model(admins: Admins) -> None:
    w = admins.world
    # bob (contractor-co, ceiling internal) cleared critical behind the vendor's back.
    sql(w, "UPDATE principals SET clearance = :c WHERE name = 'bob'", c=int(Level.CRITICAL))
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
