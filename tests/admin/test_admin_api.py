"""The admin API end to end: over HTTP against a running gateway, with the data plane and the
audit log as witnesses.

Who may call (authentication, roles, vendor scopes), what a call writes (one transaction, one
audit event naming the admin, the change enforced on the data plane at once), what bad input
gets (the admin error shape, nothing written), and what never leaves (keys and upstream
credentials)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.admin.api import ROUTES
from garrison.admin.dispatch import ADMIN_MAX_BODY_BYTES
from garrison.admin_wire import ADMIN_PREFIX
from garrison.domain import (
    Level,
    Principal,
    PrincipalKind,
    Status,
    VendorStatus,
)
from garrison.errors import BadRequest
from tests.support.admin import admin_call, make_admin, table_counts
from tests.support.db import hold_audit_lock
from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]
VENDOR = "contractor-co"
DAY = 86400.0
# A second upstream credential, used to replace the first through the API.
NEW_UPSTREAM_KEY = "sk-upstream-REPLACED-fedcba9876543210"
# A well-formed key id nobody was ever issued.
NO_SUCH_KEY_ID = "0123456789abcdef"
ERROR_FIELDS = {"type", "message", "rule", "request_id"}


# ── calling ──────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]
    raw: bytes

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id", "")

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and set(self.body) == {"error"}, self.raw
        err = self.body["error"]
        assert set(err) == ERROR_FIELDS, err
        assert isinstance(err["message"], str) and err["message"], err
        return dict(err)


@dataclass
class Transcript:
    """Every response seen (admin API and data plane), headers and body, as bytes."""

    responses: list[bytes] = field(default_factory=list)

    def add(self, headers: Mapping[str, str], body: bytes) -> None:
        head = "\n".join(f"{k}: {v}" for k, v in headers.items()).encode()
        self.responses.append(head + b"\n\n" + body)

    def count(self, needle: str) -> int:
        return sum(needle.encode() in r for r in self.responses)


async def call(
    world: World,
    key: str | None,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    local_addr: str | None = None,
    headers: dict[str, str] | None = None,
    transcript: Transcript | None = None,
) -> Answer:
    """One call to ``/admin/v1{path}`` (status, JSON body, headers, raw bytes)."""
    sent = dict(headers or {})
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    if data is not None:
        sent.setdefault("content-type", "application/json")
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0)) if local_addr else None
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(
            method, f"{world.base}{ADMIN_PREFIX}{path}", data=data, headers=sent, params=params
        ) as resp,
    ):
        payload = await resp.read()
        if transcript is not None:
            transcript.add(resp.headers, payload)
        assert resp.content_type == "application/json", (resp.status, payload)
        return Answer(
            resp.status, orjson.loads(payload) if payload else None, resp.headers, payload
        )


async def chat(
    world: World,
    key: str,
    model: str = "assistant",
    *,
    transcript: Transcript | None = None,
) -> int:
    """One chat completion on the data plane; its status."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": model, "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        payload = await resp.read()
        if transcript is not None:
            transcript.add(resp.headers, payload)
        return resp.status


@dataclass(frozen=True)
class Admin:
    """An admin as the tests call it: its principal and the key it calls with."""

    name: str
    id: str
    key: str

    @property
    def key_id(self) -> str:
        return key_id(self.key)


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def principal(world: World, name: str) -> Principal:
    (found,) = [p for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    return found


def org_id(world: World, name: str) -> str:
    (found,) = [o.id for o in world.gateway.state.snapshot.orgs.values() if o.name == name]
    return found


def security_admin(world: World) -> Admin:
    return Admin("admin", principal(world, "admin").id, world.admin_key)


async def new_admin(world: World, name: str, roles: list[str], **kw: Any) -> Admin:
    key = make_admin(world, name, roles, **kw)
    await world.reload()
    return Admin(name, principal(world, name).id, key)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def vendor_body(name: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "sponsor": "carol",
        "contract_end": iso(time.time() + 30 * DAY),
        "networks": ["127.0.0.0/8"],
        "seat_limit": 3,
    }
    body.update(over)
    return body


# ── the audit log ────────────────────────────────────────────────────────────────────────
async def events_of(world: World, answer: Answer) -> list[dict[str, Any]]:
    """Every audit record of this call (settled first, so queued ones are in)."""
    assert answer.request_id
    await world.settle()
    return [e for e in world.events() if e["request_id"] == answer.request_id]


async def expect_write(world: World, answer: Answer, admin: Admin, *names: str) -> None:
    """The call succeeded and left exactly the change events ``names``, each naming the admin
    as actor and carrying the call's origin."""
    assert 200 <= answer.status < 300, answer.raw
    events = await events_of(world, answer)
    assert sorted(e["name"] for e in events) == sorted(names), events
    for event in events:
        assert event["actor"] == admin.id
        assert event["data"]["origin"] == {
            "via": "admin-api",
            "admin": admin.name,
            "credential_id": admin.key_id,
            "client_address": "127.0.0.1",
            "request_id": answer.request_id,
        }


async def expect_denied(
    world: World, answer: Answer, reason: str, *, actor: str | None
) -> dict[str, Any]:
    """The call was recorded once, as ``admin.denied`` with ``reason``."""
    events = await events_of(world, answer)
    assert [e["name"] for e in events] == ["admin.denied"], events
    (event,) = events
    assert event["data"]["reasons"] == [reason]
    assert event["data"]["status"] == answer.status
    assert event["actor"] == actor
    return event


def without_request_id(answer: Answer, ref: str | None = None) -> dict[str, Any]:
    """The error body with its request id dropped and ``ref`` (a name it echoes) blanked."""
    err = answer.error
    assert err["request_id"] == answer.request_id
    err.pop("request_id")
    if ref is not None:
        err["message"] = err["message"].replace(ref, "<ref>")
    return err


# ── authentication ───────────────────────────────────────────────────────────────────────
async def test_every_failed_authentication_gets_one_identical_401(world: World) -> None:
    now = time.time()
    d = world.directory
    admin_kid = key_id(world.admin_key)
    revoked = d.create_key("admin", now=now)
    d.revoke_key(revoked.key.key_id, now=now, reason="test")
    expired = d.create_key("admin", now=now - 100, expires_in=10)
    bound = d.create_key("admin", now=now, networks=["127.0.0.1/32"])
    gone = make_admin(world, "gone-admin", ["security-admin"])
    d.update_principal("gone-admin", status=Status.DISABLED, now=now)
    await world.reload()
    # The network-bound key is good from its own network (the refusal below is the network).
    ok = await call(world, bound.key.token.reveal(), "GET", "/whoami")
    assert ok.status == 200, ok.raw

    cases: list[tuple[str, str | None, dict[str, Any]]] = [
        ("credential.missing", None, {}),
        ("credential.missing", None, {"headers": {"authorization": "Basic YWRtaW46YWRtaW4="}}),
        ("credential.malformed", "not-a-garrison-key", {}),
        ("credential.unknown", f"gk_{NO_SUCH_KEY_ID}_{'A' * 43}", {}),
        ("credential.bad_secret", f"gk_{admin_kid}_{'A' * 43}", {}),
        ("credential.revoked", revoked.key.token.reveal(), {}),
        ("credential.expired", expired.key.token.reveal(), {}),
        ("principal.inactive", gone, {}),
        (
            "credential.network_not_allowed",
            bound.key.token.reveal(),
            {"local_addr": "127.0.0.2"},
        ),
    ]
    before = table_counts(world)
    bodies = []
    for reason, key, kw in cases:
        for method, path, body in (
            ("GET", "/whoami", None),
            ("POST", "/orgs", {"name": "never-made"}),
        ):
            answer = await call(world, key, method, path, body, **kw)
            assert answer.status == 401, (reason, answer.raw)
            assert answer.headers.get("www-authenticate", "").lower().startswith("bearer"), reason
            assert answer.headers.get("cache-control") == "no-store"
            bodies.append(without_request_id(answer))
            event = await expect_denied(world, answer, reason, actor=None)
            assert event["data"]["path"] == ADMIN_PREFIX + path
            assert event["data"]["method"] == method
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["type"] == "invalid_api_key"
    assert bodies[0]["rule"] is None
    assert table_counts(world) == before


async def test_a_principal_without_an_admin_role_is_refused(world: World) -> None:
    carol = principal(world, "carol")
    before = table_counts(world)
    for method, path, body in (
        ("GET", "/whoami", None),
        ("GET", "/principals", None),
        ("POST", "/orgs", {"name": "carols-org"}),
        ("PATCH", "/principals/carol", {"clearance": "critical"}),
    ):
        answer = await call(world, world.keys["carol"], method, path, body)
        assert answer.status == 403, answer.raw
        assert answer.error["type"] == "forbidden"
        await expect_denied(world, answer, "admin.no_role", actor=carol.id)
    assert table_counts(world) == before


# ── the auditor ──────────────────────────────────────────────────────────────────────────
async def test_auditor_reads_everything(world: World) -> None:
    auditor = await new_admin(world, "auditor-1", ["auditor"])
    bob_key_id = key_id(world.keys["bob"])
    reads = {
        "/whoami": lambda b: b["roles"] == ["auditor"] and b["vendor_scope"] == [],
        "/orgs": lambda b: {"internal", VENDOR} <= {o["name"] for o in b},
        "/vendors": lambda b: [v["name"] for v in b] == [VENDOR],
        f"/vendors/{VENDOR}": lambda b: (
            b["name"] == VENDOR and bob_key_id in str(b) and b["terms"]["sponsor"] == "admin"
        ),
        "/principals": lambda b: {"admin", "alice", "bob", "carol"} <= {p["name"] for p in b},
        "/principals/bob": lambda b: b["org"] == VENDOR and bob_key_id in str(b["keys"]),
        "/keys": lambda b: bob_key_id in {k["id"] for k in b},
        "/models": lambda b: {"assistant", "cyber-model"} <= {m["name"] for m in b},
        "/models/cyber-model": lambda b: (
            b["level"] == "restricted" and b["compartments"] == ["cyber"]
        ),
    }
    for path, check in reads.items():
        answer = await call(world, auditor.key, "GET", path)
        assert answer.status == 200, (path, answer.raw)
        assert check(answer.body), (path, answer.body)
        events = await events_of(world, answer)
        assert [e["name"] for e in events] == ["admin.read"]
        assert events[0]["actor"] == auditor.id
        assert events[0]["data"]["path"] == ADMIN_PREFIX + path
    # Filters work for an all-reaching reader.
    answer = await call(world, auditor.key, "GET", "/principals", params={"org": VENDOR})
    assert {p["name"] for p in answer.body} == {"bob"}
    answer = await call(world, auditor.key, "GET", "/keys", params={"principal": "bob"})
    assert {k["principal"] for k in answer.body} == {"bob"}
    assert len(answer.body) == 3  # bob, bob-netbound, bob-short


def writes_of_every_kind(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """A valid request for every write endpoint (each would succeed for a security-admin)."""
    alice_key = key_id(world.keys["alice"])
    carol_key = key_id(world.keys["carol"])
    return [
        ("POST", "/orgs", {"name": "new-org"}),
        ("POST", "/vendors", vendor_body("new-vendor")),
        ("PATCH", f"/vendors/{VENDOR}", {"seat_limit": 9}),
        ("POST", f"/vendors/{VENDOR}/status", {"status": "suspended"}),
        ("POST", f"/vendors/{VENDOR}/status", {"status": "offboarded"}),
        ("POST", "/principals", {"name": "newbie", "org": "internal"}),
        ("PATCH", "/principals/carol", {"clearance": "restricted"}),
        ("PATCH", "/principals/carol", {"status": "disabled"}),
        ("PATCH", "/principals/carol", {"roles": ["auditor"]}),
        ("POST", "/keys", {"principal": "carol"}),
        ("POST", "/keys", {"principal": "carol", "canary": True}),
        ("POST", f"/keys/{alice_key}/revoke", {"reason": "test"}),
        ("POST", f"/keys/{carol_key}/rotate", {"grace_s": 0}),
        (
            "POST",
            "/models",
            {"name": "new-model", "upstream_url": "http://127.0.0.1:9/v1", "level": "public"},
        ),
        ("PATCH", "/models/assistant", {"level": "critical"}),
    ]


@pytest.mark.parametrize("roles", [["auditor"], ["approver"], ["auditor", "approver"]])
async def test_readers_and_approvers_cannot_write_anything(world: World, roles: list[str]) -> None:
    reader = await new_admin(world, "reader-1", roles)
    before = table_counts(world)
    for method, path, body in writes_of_every_kind(world):
        answer = await call(world, reader.key, method, path, body)
        assert answer.status == 403, (method, path, answer.raw)
        assert answer.error["type"] == "forbidden"
        await expect_denied(world, answer, "admin.role_lacks_action", actor=reader.id)
    assert table_counts(world) == before
    # ...and nothing changed on the data plane either.
    assert await chat(world, world.keys["alice"]) == 200
    assert await chat(world, world.keys["bob"]) == 200


async def test_approver_reads_nothing(world: World) -> None:
    approver = await new_admin(world, "approver-1", ["approver"])
    for path in ("/orgs", "/vendors", f"/vendors/{VENDOR}", "/principals", "/keys", "/models"):
        answer = await call(world, approver.key, "GET", path)
        assert answer.status == 403, (path, answer.raw)
        await expect_denied(world, answer, "admin.role_lacks_action", actor=approver.id)


# ── vendor-managers ──────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Managers:
    vendor: Admin  # an employee of contractor-co, managing it
    internal: Admin  # an internal vendor-manager, sponsor of acme
    erin_key: str  # a person of acme


@pytest.fixture
async def managers(world: World) -> AsyncIterator[Managers]:
    now = time.time()
    vendor_vm = make_admin(world, "vm-contractor", ["vendor-manager"], org=VENDOR)
    internal_vm = make_admin(world, "vm-internal", ["vendor-manager"])
    d = world.directory
    d.create_vendor(
        "acme",
        sponsor="vm-internal",
        contract_start=now - DAY,
        contract_end=now + 30 * DAY,
        networks=["127.0.0.0/8"],
        seat_limit=5,
        ceiling_level=Level.INTERNAL,
        now=now,
    )
    d.set_vendor_status("acme", VendorStatus.ACTIVE, now=now)
    d.create_principal(
        "erin", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    erin_key = d.create_key("erin", now=now).key.token.reveal()
    await world.reload()
    yield Managers(
        vendor=Admin("vm-contractor", principal(world, "vm-contractor").id, vendor_vm),
        internal=Admin("vm-internal", principal(world, "vm-internal").id, internal_vm),
        erin_key=erin_key,
    )


async def test_vendor_manager_reads_only_their_vendor(world: World, managers: Managers) -> None:
    vm = managers.vendor
    who = await call(world, vm.key, "GET", "/whoami")
    assert who.body["vendor_scope"] == [org_id(world, VENDOR)]
    orgs = await call(world, vm.key, "GET", "/orgs")
    assert [o["name"] for o in orgs.body] == [VENDOR]
    vendors = await call(world, vm.key, "GET", "/vendors")
    assert [v["name"] for v in vendors.body] == [VENDOR]
    report = await call(world, vm.key, "GET", f"/vendors/{VENDOR}")
    assert report.status == 200 and report.body["name"] == VENDOR
    people = await call(world, vm.key, "GET", "/principals")
    assert {p["name"] for p in people.body} == {"bob", "vm-contractor"}
    assert {p["org"] for p in people.body} == {VENDOR}
    # Asking for another org by filter yields nothing more.
    people = await call(world, vm.key, "GET", "/principals", params={"org": "internal"})
    assert people.status == 200 and people.body == []
    keys = await call(world, vm.key, "GET", "/keys")
    assert {k["principal"] for k in keys.body} == {"bob", "vm-contractor"}
    keys = await call(world, vm.key, "GET", "/keys", params={"principal": "alice"})
    assert keys.body == []
    assert (await call(world, vm.key, "GET", "/principals/bob")).status == 200
    # The model registry is not theirs to read.
    for path in ("/models", "/models/assistant"):
        answer = await call(world, vm.key, "GET", path)
        assert answer.status == 403, answer.raw
        await expect_denied(world, answer, "admin.role_lacks_action", actor=vm.id)

    internal = managers.internal
    who = await call(world, internal.key, "GET", "/whoami")
    assert who.body["vendor_scope"] == [org_id(world, "acme")]  # not their own (internal) org
    orgs = await call(world, internal.key, "GET", "/orgs")
    assert [o["name"] for o in orgs.body] == ["acme"]
    people = await call(world, internal.key, "GET", "/principals")
    assert [p["name"] for p in people.body] == ["erin"]
    keys = await call(world, internal.key, "GET", "/keys")
    assert {k["principal"] for k in keys.body} == {"erin"}


async def test_vendor_manager_reads_outside_scope_look_like_nothing(
    world: World, managers: Managers
) -> None:
    vm = managers.vendor
    pairs = [
        ("/principals/{}", "alice"),
        ("/principals/{}", "erin"),
        ("/principals/{}", "vm-internal"),
        ("/vendors/{}", "acme"),
        ("/vendors/{}", "internal"),
    ]
    for template, ref in pairs:
        seen = await call(world, vm.key, "GET", template.format(ref))
        ghost = await call(world, vm.key, "GET", template.format("ghost"))
        assert seen.status == ghost.status == 404, (ref, seen.raw)
        assert without_request_id(seen, repr(ref)) == without_request_id(ghost, "'ghost'")
        a = await expect_denied(world, seen, "admin.invalid_request", actor=vm.id)
        b = await expect_denied(world, ghost, "admin.invalid_request", actor=vm.id)
        assert a["data"]["reasons"] == b["data"]["reasons"]
    # An internal vendor-manager does not see the vendor they do not sponsor.
    seen = await call(world, managers.internal.key, "GET", f"/vendors/{VENDOR}")
    ghost = await call(world, managers.internal.key, "GET", "/vendors/ghost")
    assert seen.status == ghost.status == 404
    assert without_request_id(seen, repr(VENDOR)) == without_request_id(ghost, "'ghost'")


async def test_vendor_manager_writes_outside_scope_look_like_nothing(
    world: World, managers: Managers
) -> None:
    vm = managers.vendor
    alice_key = key_id(world.keys["alice"])
    erin_key = key_id(managers.erin_key)
    # (request to an existing target out of scope, the same to a target that does not exist,
    #  the reference the message may echo in each)
    pairs = [
        (
            ("PATCH", "/principals/alice", {"status": "disabled"}, "alice"),
            ("PATCH", "/principals/ghost", {"status": "disabled"}, "ghost"),
        ),
        (
            ("PATCH", "/principals/erin", {"status": "disabled"}, "erin"),
            ("PATCH", "/principals/ghost", {"status": "disabled"}, "ghost"),
        ),
        (
            ("PATCH", "/principals/admin", {"status": "disabled"}, "admin"),
            ("PATCH", "/principals/ghost", {"status": "disabled"}, "ghost"),
        ),
        (
            ("POST", "/principals", {"name": "mallory", "org": "internal"}, "internal"),
            ("POST", "/principals", {"name": "mallory", "org": "ghost"}, "ghost"),
        ),
        (
            ("POST", "/principals", {"name": "mallory", "org": "acme"}, "acme"),
            ("POST", "/principals", {"name": "mallory", "org": "ghost"}, "ghost"),
        ),
        (
            ("POST", "/keys", {"principal": "alice"}, "alice"),
            ("POST", "/keys", {"principal": "ghost"}, "ghost"),
        ),
        (
            ("POST", "/keys", {"principal": "erin"}, "erin"),
            ("POST", "/keys", {"principal": "ghost"}, "ghost"),
        ),
        (
            ("POST", f"/keys/{alice_key}/revoke", {"reason": "x"}, alice_key),
            ("POST", f"/keys/{NO_SUCH_KEY_ID}/revoke", {"reason": "x"}, NO_SUCH_KEY_ID),
        ),
        (
            ("POST", f"/keys/{erin_key}/rotate", {}, erin_key),
            ("POST", f"/keys/{NO_SUCH_KEY_ID}/rotate", {}, NO_SUCH_KEY_ID),
        ),
        (
            ("POST", "/vendors/acme/status", {"status": "suspended"}, "acme"),
            ("POST", "/vendors/ghost/status", {"status": "suspended"}, "ghost"),
        ),
        (
            ("POST", "/vendors/internal/status", {"status": "suspended"}, "internal"),
            ("POST", "/vendors/ghost/status", {"status": "suspended"}, "ghost"),
        ),
    ]
    before = table_counts(world)
    for (m1, p1, b1, ref1), (m2, p2, b2, ref2) in pairs:
        seen = await call(world, vm.key, m1, p1, b1)
        ghost = await call(world, vm.key, m2, p2, b2)
        assert seen.status == ghost.status == 404, (p1, seen.raw, ghost.raw)
        assert seen.error["type"] == "not_found"
        assert without_request_id(seen, repr(ref1)) == without_request_id(ghost, repr(ref2))
        await expect_denied(world, seen, "admin.out_of_scope", actor=vm.id)
        await expect_denied(world, ghost, "admin.out_of_scope", actor=vm.id)
    assert table_counts(world) == before
    # Nothing out of scope changed on the data plane.
    assert await chat(world, world.keys["alice"]) == 200
    assert await chat(world, managers.erin_key) == 200


async def test_vendor_manager_manages_people_and_keys_of_their_vendor(
    world: World, managers: Managers
) -> None:
    vm = managers.vendor
    answer = await call(world, vm.key, "POST", "/principals", {"name": "frank", "org": VENDOR})
    assert answer.status == 201, answer.raw
    await expect_write(world, answer, vm, "principal.created")
    answer = await call(
        world, vm.key, "POST", "/principals", {"name": "ci-bot", "org": VENDOR, "kind": "service"}
    )
    assert answer.status == 201, answer.raw
    await expect_write(world, answer, vm, "principal.created")

    # A person's key is theirs to make (issue 12): the manager is refused frank's, and
    # makes keys for the vendor's service account.
    refused = await call(world, vm.key, "POST", "/keys", {"principal": "frank"})
    assert refused.status == 403 and refused.body["error"]["rule"] == "own-credential"
    created = await call(world, vm.key, "POST", "/keys", {"principal": "ci-bot", "note": "ci"})
    assert created.status == 201, created.raw
    await expect_write(world, created, vm, "credential.created")
    first = created.body["key"]
    assert await chat(world, first) == 200
    # The key got the vendor's networks and does not outlive the contract.
    listed = await call(world, vm.key, "GET", "/keys", params={"principal": "ci-bot"})
    (row,) = listed.body
    assert row["networks"] == ["127.0.0.0/8"]
    report = await call(world, vm.key, "GET", f"/vendors/{VENDOR}")
    assert row["expires_at"] <= report.body["terms"]["contract_end"]

    rotated = await call(world, vm.key, "POST", f"/keys/{key_id(first)}/rotate", {"grace_s": 0})
    assert rotated.status == 201, rotated.raw
    await expect_write(world, rotated, vm, "credential.created", "credential.rotated")
    second = rotated.body["key"]
    assert await chat(world, first) == 401
    assert await chat(world, second) == 200

    revoked = await call(
        world, vm.key, "POST", f"/keys/{key_id(second)}/revoke", {"reason": "left"}
    )
    assert revoked.status == 200, revoked.raw
    await expect_write(world, revoked, vm, "credential.revoked")
    assert await chat(world, second) == 401

    # Disable and enable bob: the data plane follows at once.
    answer = await call(world, vm.key, "PATCH", "/principals/bob", {"status": "disabled"})
    assert answer.status == 200, answer.raw
    assert answer.body == {"changes": {"status": ["active", "disabled"]}}
    await expect_write(world, answer, vm, "principal.updated")
    assert await chat(world, world.keys["bob"]) == 401
    answer = await call(world, vm.key, "PATCH", "/principals/bob", {"status": "active"})
    assert answer.status == 200, answer.raw
    await expect_write(world, answer, vm, "principal.updated")
    assert await chat(world, world.keys["bob"]) == 200

    # Suspending their own vendor stops its people, the manager included.
    answer = await call(world, vm.key, "POST", f"/vendors/{VENDOR}/status", {"status": "suspended"})
    assert answer.status == 200, answer.raw
    assert answer.body == {"vendor": VENDOR, "status": "suspended"}
    await expect_write(world, answer, vm, "vendor.suspended")
    assert await chat(world, world.keys["bob"]) == 401
    after = await call(world, vm.key, "GET", "/whoami")
    assert after.status == 401
    await expect_denied(world, after, "vendor.inactive", actor=None)


async def test_internal_vendor_manager_manages_the_vendor_they_sponsor(
    world: World, managers: Managers
) -> None:
    vm = managers.internal
    answer = await call(
        world, vm.key, "POST", "/principals", {"name": "gina", "org": "acme", "kind": "service"}
    )
    assert answer.status == 201, answer.raw
    await expect_write(world, answer, vm, "principal.created")
    created = await call(world, vm.key, "POST", "/keys", {"principal": "gina"})
    assert created.status == 201, created.raw
    assert await chat(world, created.body["key"]) == 200
    answer = await call(world, vm.key, "PATCH", "/principals/erin", {"status": "disabled"})
    assert answer.status == 200, answer.raw
    assert await chat(world, managers.erin_key) == 401
    answer = await call(world, vm.key, "POST", "/vendors/acme/status", {"status": "suspended"})
    assert answer.status == 200, answer.raw
    await expect_write(world, answer, vm, "vendor.suspended")
    assert await chat(world, created.body["key"]) == 401
    # Their own key is an internal one: still good, and their reach is unchanged.
    who = await call(world, vm.key, "GET", "/whoami")
    assert who.status == 200 and who.body["vendor_scope"] == [org_id(world, "acme")]
    # ...and contractor-co is not theirs.
    before = table_counts(world)
    answer = await call(world, vm.key, "PATCH", "/principals/bob", {"status": "disabled"})
    assert answer.status == 404
    answer = await call(world, vm.key, "POST", "/principals", {"name": "hank", "org": VENDOR})
    assert answer.status == 404
    assert table_counts(world) == before
    assert await chat(world, world.keys["bob"]) == 200


async def test_vendor_manager_cannot_take_the_other_actions(
    world: World, managers: Managers
) -> None:
    vm = managers.vendor
    bob_key = key_id(world.keys["bob"])
    refused = [
        ("POST", "/principals", {"name": "boss", "org": VENDOR, "roles": ["vendor-manager"]}),
        ("PATCH", "/principals/bob", {"roles": ["vendor-manager"]}),
        ("PATCH", "/principals/bob", {"clearance": "public"}),
        ("PATCH", "/principals/bob", {"compartments": []}),
        ("PATCH", "/principals/bob", {"clearance": "public", "status": "disabled"}),
        ("PATCH", f"/principals/{vm.name}", {"roles": []}),
        ("POST", "/keys", {"principal": "bob", "canary": True}),
        ("POST", "/models", {"name": "vm-model", "upstream_url": "http://127.0.0.1:9/v1"}),
        ("PATCH", "/models/assistant", {"level": "public"}),
        ("POST", "/vendors", vendor_body("vm-vendor")),
        ("PATCH", f"/vendors/{VENDOR}", {"seat_limit": 50}),
        ("POST", f"/vendors/{VENDOR}/status", {"status": "offboarded"}),
        ("POST", "/orgs", {"name": "vm-org"}),
    ]
    before = table_counts(world)
    for method, path, body in refused:
        answer = await call(world, vm.key, method, path, body)
        assert answer.status == 403, (method, path, body, answer.raw)
        assert answer.error["type"] == "forbidden"
        await expect_denied(world, answer, "admin.role_lacks_action", actor=vm.id)
    # Activation is a security-admin's: refused for a vendor in scope too.
    answer = await call(world, vm.key, "POST", f"/vendors/{VENDOR}/status", {"status": "active"})
    assert answer.status == 403
    internal = managers.internal
    answer = await call(world, internal.key, "POST", "/vendors/acme/status", {"status": "active"})
    assert answer.status == 403
    await expect_denied(world, answer, "admin.role_lacks_action", actor=internal.id)
    assert table_counts(world) == before
    assert await chat(world, world.keys["bob"]) == 200
    listed = await call(world, world.admin_key, "GET", "/keys", params={"principal": "bob"})
    assert all(not k["canary"] for k in listed.body) and bob_key in {k["id"] for k in listed.body}


async def test_vendor_manager_cannot_add_anyone_above_the_vendor_ceiling(
    world: World, managers: Managers
) -> None:
    before = table_counts(world)
    for vm, org in ((managers.vendor, VENDOR), (managers.internal, "acme")):
        for extra in (
            {"clearance": "restricted"},
            {"clearance": "critical"},
            {"compartments": ["cyber"]},
            {"clearance": "internal", "compartments": ["cyber"]},
        ):
            answer = await call(
                world, vm.key, "POST", "/principals", {"name": "overreach", "org": org, **extra}
            )
            assert answer.status == 400, (org, extra, answer.raw)
            err = answer.error
            assert err["rule"] == "vendor-ceiling", err
            assert "ceiling" in err["message"]
            event = await expect_denied(world, answer, "admin.invalid_request", actor=vm.id)
            assert event["data"]["rule"] == "vendor-ceiling"
    assert table_counts(world) == before
    # At the ceiling is fine.
    answer = await call(
        world,
        managers.vendor.key,
        "POST",
        "/principals",
        {"name": "at-ceiling", "org": VENDOR, "clearance": "internal"},
    )
    assert answer.status == 201, answer.raw


async def test_an_empty_patch_is_refused_alike_whatever_the_target(
    world: World, managers: Managers
) -> None:
    auditor = await new_admin(world, "auditor-2", ["auditor"])
    before = table_counts(world)
    for admin in (managers.vendor, managers.internal, auditor):
        answers = {}
        for ref in ("bob", "alice", "erin", "ghost"):
            for body in ({}, {"clearance": None, "status": None}):
                answer = await call(world, admin.key, "PATCH", f"/principals/{ref}", body)
                assert 400 <= answer.status < 500, (admin.name, ref, answer.raw)
                assert (await events_of(world, answer))[0]["name"] == "admin.denied"
                answers[ref] = (answer.status, without_request_id(answer, repr(ref)))
        assert len(set(map(repr, answers.values()))) == 1, (admin.name, answers)
    assert table_counts(world) == before


# ── the security-admin ───────────────────────────────────────────────────────────────────
async def full_flow(world: World, transcript: Transcript) -> list[str]:
    """Everything a security-admin does, checked call by call; returns the keys issued."""
    admin = security_admin(world)
    issued: list[str] = []

    async def sa(
        method: str,
        path: str,
        body: Any = None,
        status: int = 200,
        params: dict[str, str] | None = None,
    ) -> Answer:
        answer = await call(
            world, admin.key, method, path, body, params=params, transcript=transcript
        )
        assert answer.status == status, (method, path, answer.raw)
        return answer

    async def dp(key: str, model: str = "assistant") -> int:
        return await chat(world, key, model, transcript=transcript)

    # A second security-admin, for the one two-person change below (set-up).
    second_admin = await new_admin(world, "sec-2", ["security-admin"])
    start = table_counts(world)
    answer = await sa("POST", "/orgs", {"name": "research"}, 201)
    assert answer.body["name"] == "research"
    await expect_write(world, answer, admin, "org.created")

    answer = await sa("POST", "/vendors", vendor_body("acme", agreement_ref="MSA-7"), 201)
    assert answer.body["status"] == "onboarding"
    await expect_write(world, answer, admin, "org.created")
    answer = await sa("POST", "/vendors/acme/status", {"status": "active"})
    await expect_write(world, answer, admin, "vendor.activated")
    answer = await sa("PATCH", "/vendors/acme", {"seat_limit": 4})
    assert answer.body == {"changes": {"seat_limit": 4}}
    await expect_write(world, answer, admin, "vendor.updated")

    # Service accounts: admins make keys for them only (people enroll, issue 12).
    answer = await sa(
        "POST", "/principals", {"name": "dave", "org": "acme", "kind": "service"}, 201
    )
    await expect_write(world, answer, admin, "principal.created")
    answer = await sa(
        "POST", "/principals", {"name": "ruth", "org": "research", "kind": "service"}, 201
    )
    await expect_write(world, answer, admin, "principal.created")

    # A new key works on the data plane at once.
    answer = await sa("POST", "/keys", {"principal": "dave", "note": "laptop"}, 201)
    await expect_write(world, answer, admin, "credential.created")
    first = answer.body["key"]
    issued.append(first)
    assert answer.body["id"] == key_id(first)
    assert await dp(first) == 200

    # Rotation without grace: the old key is refused at once, the new one works.
    answer = await sa("POST", f"/keys/{key_id(first)}/rotate", {"grace_s": 0}, 201)
    await expect_write(world, answer, admin, "credential.created", "credential.rotated")
    second = answer.body["key"]
    issued.append(second)
    assert answer.body["rotated_from"] == key_id(first)
    assert await dp(first) == 401
    assert await dp(second) == 200

    # Rotation with grace: both work until the grace ends.
    answer = await sa(
        "POST", f"/keys/{key_id(second)}/rotate", {"grace_s": 3600, "reason": "roll"}, 201
    )
    await expect_write(world, answer, admin, "credential.created", "credential.rotated")
    third = answer.body["key"]
    issued.append(third)
    assert await dp(second) == 200
    assert await dp(third) == 200
    keys = {k["id"]: k for k in (await sa("GET", "/keys", params={"principal": "dave"})).body}
    assert keys[key_id(first)]["state"] == "revoked"
    assert keys[key_id(second)]["state"] == "active"
    assert keys[key_id(second)]["expires_at"] <= time.time() + 3600 + 5

    # Revocation is immediate.
    answer = await sa("POST", f"/keys/{key_id(third)}/revoke", {"reason": "done"})
    assert answer.body == {"id": key_id(third), "state": "revoked"}
    await expect_write(world, answer, admin, "credential.revoked")
    assert await dp(third) == 401
    assert await dp(second) == 200

    # An internal key for ruth.
    answer = await sa("POST", "/keys", {"principal": "ruth", "expires_in_s": 3600}, 201)
    await expect_write(world, answer, admin, "credential.created")
    issued.append(answer.body["key"])
    assert await dp(answer.body["key"]) == 200

    # A model with an upstream key: it is used, and never shown.
    upstream_url = (await sa("GET", "/models/assistant")).body["upstream_url"]
    answer = await sa(
        "POST",
        "/models",
        {
            "name": "assistant-2",
            "upstream_url": upstream_url,
            "upstream_model": "mock-small",
            "upstream_key": UPSTREAM_KEY,
        },
        202,  # the server of a restricted model in a compartment: two admins
    )
    await expect_write(world, answer, admin, "change.proposed")
    change_id = answer.body["pending"]["id"]
    approved = await call(world, second_admin.key, "POST", f"/changes/{change_id}/approve", {})
    assert approved.status == 200, approved.raw
    assert await dp(world.keys["alice"], "assistant-2") == 200
    shown = (await sa("GET", "/models/assistant-2")).body
    assert shown["upstream_key"] == "sealed"
    assert shown["auth_style"] == "bearer"
    listed = (await sa("GET", "/models")).body
    assert "assistant-2" in {m["name"] for m in listed}
    # Replacing the upstream key takes effect at once (the mock only accepts the original).
    answer = await sa("PATCH", "/models/assistant-2", {"upstream_key": NEW_UPSTREAM_KEY})
    assert answer.body == {"changes": {"upstream_key": "replaced"}}
    await expect_write(world, answer, admin, "model.updated")
    assert await dp(world.keys["alice"], "assistant-2") != 200
    answer = await sa(
        "PATCH", "/models/assistant-2", {"upstream_key": UPSTREAM_KEY, "level": "restricted"}
    )
    await expect_write(world, answer, admin, "model.updated")
    assert await dp(world.keys["alice"], "assistant-2") == 200
    assert await dp(world.keys["carol"], "assistant-2") == 404  # now above carol

    # Offboarding ends everyone of the vendor.
    answer = await sa("POST", "/vendors/acme/status", {"status": "offboarded", "reason": "end"})
    await expect_write(world, answer, admin, "vendor.offboarded")
    assert await dp(second) == 401
    report = (await sa("GET", "/vendors/acme")).body
    assert report["terms"]["status"] == "offboarded"
    assert all(k["state"] == "revoked" for p in report["principals"] for k in p["keys"])

    end = table_counts(world)
    assert end["orgs"] == start["orgs"] + 2
    assert end["principals"] == start["principals"] + 2
    assert end["credentials"] == start["credentials"] + 4
    assert end["models"] == start["models"] + 1
    # One change-feed row per change event: 15 writes, two of them rotations.
    assert end["change_feed"] == start["change_feed"] + 17
    return issued


async def test_security_admin_full_flow(world: World) -> None:
    transcript = Transcript()
    issued = await full_flow(world, transcript)
    assert len(issued) == 4
    # Nothing issued here is the key of anyone else.
    assert len(set(issued)) == 4


async def test_clearance_change_is_enforced_on_the_data_plane_at_once(world: World) -> None:
    admin = security_admin(world)
    carol = world.keys["carol"]
    assert await chat(world, carol, "cyber-model") == 404
    answer = await call(
        world,
        admin.key,
        "PATCH",
        "/principals/carol",
        {"clearance": "restricted", "compartments": ["cyber"]},
    )
    # Raising access is a two-person change: proposed now, applied by a second admin.
    assert answer.status == 202, answer.raw
    change_id = answer.body["pending"]["id"]
    assert await chat(world, carol, "cyber-model") == 404
    second = await new_admin(world, "second-security-admin", ["security-admin"])
    answer = await call(world, second.key, "POST", f"/changes/{change_id}/approve")
    assert answer.status == 200, answer.raw
    assert answer.body["result"] == {
        "clearance": ["internal", "restricted"],
        "compartments": [[], ["cyber"]],
    }
    assert await chat(world, carol, "cyber-model") == 200
    # Taking the compartment away is as immediate.
    answer = await call(world, admin.key, "PATCH", "/principals/carol", {"compartments": []})
    assert answer.status == 200, answer.raw
    await expect_write(world, answer, admin, "principal.updated")
    assert await chat(world, carol, "cyber-model") == 404
    assert await chat(world, carol, "assistant") == 200
    shown = await call(world, admin.key, "GET", "/principals/carol")
    assert shown.body["clearance"] == "restricted" and shown.body["compartments"] == []


async def test_security_admin_cannot_change_their_own_access(world: World) -> None:
    admin = security_admin(world)
    before = table_counts(world)
    for ref in ("admin", admin.id):
        body: dict[str, Any]
        for body in (
            {"clearance": "public"},
            {"compartments": ["cyber"]},
            {"roles": []},
            {"roles": ["security-admin", "auditor"]},
            {"clearance": "critical", "status": "active"},
        ):
            answer = await call(world, admin.key, "PATCH", f"/principals/{ref}", body)
            assert answer.status == 403, (ref, body, answer.raw)
            assert answer.error["rule"] == "no-self-change"
            await expect_denied(world, answer, "admin.self_change", actor=admin.id)
    assert table_counts(world) == before
    # The rule is about oneself: another security-admin may change them.
    other = await new_admin(world, "admin-2", ["security-admin"])
    third = await new_admin(world, "admin-3", ["security-admin"])
    # Any change to a security-admin takes two (issue 12): proposed by one, applied by a
    # third (never by the admin it changes).
    answer = await call(world, other.key, "PATCH", "/principals/admin", {"clearance": "restricted"})
    assert answer.status == 202, answer.raw
    change = answer.body["pending"]["id"]
    answer = await call(world, admin.key, "POST", f"/changes/{change}/approve")
    assert answer.status == 403 and answer.error["rule"] == "no-self-change"
    answer = await call(world, third.key, "POST", f"/changes/{change}/approve")
    assert answer.status == 200, answer.raw
    assert answer.body["result"]
    # Taking roles away from a security-admin waits for a second admin too.
    answer = await call(world, admin.key, "PATCH", "/principals/admin-2", {"roles": []})
    assert answer.status == 202, answer.raw
    answer = await call(
        world, third.key, "POST", f"/changes/{answer.body['pending']['id']}/approve"
    )
    assert answer.status == 200, answer.raw
    assert answer.body["result"]
    # admin-2 holds no role now: their next write is refused.
    answer = await call(world, other.key, "POST", "/orgs", {"name": "late"})
    assert answer.status == 403


async def test_the_last_security_admin_stays(world: World) -> None:
    admin = security_admin(world)
    before = table_counts(world)
    answer = await call(world, admin.key, "PATCH", "/principals/admin", {"status": "disabled"})
    assert answer.status == 400, answer.raw
    assert answer.error["rule"] == "last-security-admin"
    event = await expect_denied(world, answer, "admin.invalid_request", actor=admin.id)
    assert event["data"]["rule"] == "last-security-admin"
    assert table_counts(world) == before
    assert (await call(world, admin.key, "GET", "/whoami")).status == 200

    # With two, one may be disabled (a change to a security-admin: proposed by one, applied
    # by a third, issue 12); then the other is the last one.
    other = await new_admin(world, "admin-2", ["security-admin"])
    third = await new_admin(world, "admin-3", ["security-admin"])
    answer = await call(world, other.key, "PATCH", "/principals/admin", {"status": "disabled"})
    assert answer.status == 202, answer.raw
    change = answer.body["pending"]["id"]
    answer = await call(world, third.key, "POST", f"/changes/{change}/approve")
    assert answer.status == 200, answer.raw
    assert (await call(world, admin.key, "GET", "/whoami")).status == 401
    world.directory.update_principal("admin-3", status=Status.DISABLED, now=time.time())
    await world.reload()
    before = table_counts(world)
    answer = await call(world, other.key, "PATCH", "/principals/admin-2", {"status": "disabled"})
    assert answer.status == 400 and answer.error["rule"] == "last-security-admin"
    # Dropping the role would be a self-change (refused first)...
    answer = await call(world, other.key, "PATCH", "/principals/admin-2", {"roles": ["auditor"]})
    assert answer.status == 403 and answer.error["rule"] == "no-self-change"
    assert table_counts(world) == before
    # ...and the directory under the API refuses it as the last security-admin too.
    with pytest.raises(BadRequest, match="rule last-security-admin"):
        world.directory.update_principal("admin-2", roles=["auditor"], now=time.time())
    # Enabling the first again is a change to a security-admin: it waits for a second admin.
    answer = await call(world, other.key, "PATCH", "/principals/admin", {"status": "active"})
    assert answer.status == 202, answer.raw
    assert (await call(world, admin.key, "GET", "/whoami")).status == 401


async def test_service_accounts_cannot_hold_roles(world: World) -> None:
    admin = security_admin(world)
    before = table_counts(world)
    for roles in (["auditor"], ["security-admin"], ["approver"]):
        answer = await call(
            world,
            admin.key,
            "POST",
            "/principals",
            {"name": "ci", "org": "internal", "kind": "service", "roles": roles},
        )
        assert answer.status == 400, answer.raw
        assert answer.error["rule"] == "service-roles"
    assert table_counts(world) == before
    answer = await call(
        world,
        admin.key,
        "POST",
        "/principals",
        {"name": "ci", "org": "internal", "kind": "service"},
    )
    assert answer.status == 201, answer.raw
    before = table_counts(world)
    answer = await call(world, admin.key, "PATCH", "/principals/ci", {"roles": ["auditor"]})
    assert answer.status == 400 and answer.error["rule"] == "service-roles"
    # A vendor's people may hold only vendor-manager.
    answer = await call(world, admin.key, "PATCH", "/principals/bob", {"roles": ["auditor"]})
    assert answer.status == 400, answer.raw
    assert "vendor-manager" in answer.error["message"]
    assert table_counts(world) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/principals/carol", {"clearance": "internal"}),  # carol's clearance already
        ("/principals/carol", {"status": "active"}),  # carol's status already
        ("/models/assistant", {"level": "internal"}),  # the model's level already
        ("/models/assistant", {}),
    ],
)
async def test_a_write_that_changes_nothing_still_leaves_an_audit_record(
    world: World, path: str, body: dict[str, Any]
) -> None:
    """Every admin call is on the record (read, refused or written): a write that turns out to
    change nothing must not be answered without a trace."""
    admin = security_admin(world)
    before = table_counts(world)
    answer = await call(world, admin.key, "PATCH", path, body)
    assert answer.status in (200, 400), answer.raw
    assert table_counts(world) == before
    events = await events_of(world, answer)
    assert events, f"PATCH {path} answered {answer.status} {answer.body} with no audit record"
    assert all(e["actor"] == admin.id for e in events)


async def test_a_principal_name_cannot_be_another_principals_id(
    world: World, managers: Managers
) -> None:
    """Every reference is "id or name": a name equal to another principal's id makes the same
    reference mean two principals, depending on who reads it."""
    vm = managers.vendor
    alice = principal(world, "alice")
    before = table_counts(world)
    answer = await call(world, vm.key, "POST", "/principals", {"name": alice.id, "org": VENDOR})
    if answer.status < 400:
        as_vm = (await call(world, vm.key, "GET", f"/principals/{alice.id}")).body
        as_admin = (await call(world, world.admin_key, "GET", f"/principals/{alice.id}")).body
        pytest.fail(
            f"a vendor-manager named a person {alice.id!r} (alice's id): that reference now "
            f"means {as_vm['name']!r} of {as_vm['org']!r} to them and {as_admin['name']!r} of "
            f"{as_admin['org']!r} to a security-admin"
        )
    assert table_counts(world) == before


async def test_revoked_keys_stay_revoked(world: World) -> None:
    admin = security_admin(world)
    carol_key = key_id(world.keys["carol"])
    answer = await call(world, admin.key, "POST", f"/keys/{carol_key}/revoke", {"reason": "x"})
    assert answer.status == 200, answer.raw
    await expect_write(world, answer, admin, "credential.revoked")
    assert await chat(world, world.keys["carol"]) == 401
    before = table_counts(world)
    for action, body in (("revoke", {"reason": "again"}), ("rotate", {"grace_s": 60})):
        answer = await call(world, admin.key, "POST", f"/keys/{carol_key}/{action}", body)
        assert answer.status == 409, answer.raw
        assert answer.error["type"] == "conflict"
        assert "revoked" in answer.error["message"]
        await expect_denied(world, answer, "admin.invalid_request", actor=admin.id)
    assert table_counts(world) == before
    assert await chat(world, world.keys["carol"]) == 401


async def test_query_parameters_are_checked(world: World) -> None:
    admin = security_admin(world)
    for path, params, needle in (
        ("/principals", {"kind": "robot"}, "kind"),
        (f"/vendors/{VENDOR}", {"dormant_days": "soon"}, "dormant_days"),
        (f"/vendors/{VENDOR}", {"dormant_days": "0"}, "dormant_days"),
        (f"/vendors/{VENDOR}", {"dormant_days": "100000"}, "dormant_days"),
    ):
        answer = await call(world, admin.key, "GET", path, params=params)
        assert answer.status == 400, answer.raw
        assert needle in answer.error["message"]
        await expect_denied(world, answer, "admin.invalid_request", actor=admin.id)
    answer = await call(world, admin.key, "GET", "/principals", params={"kind": "human"})
    assert answer.status == 200 and {p["kind"] for p in answer.body} == {"human"}
    answer = await call(world, admin.key, "GET", f"/vendors/{VENDOR}", params={"dormant_days": "1"})
    assert answer.status == 200 and answer.body["dormant_days"] == 1


# ── bad input ────────────────────────────────────────────────────────────────────────────
async def test_bad_input_is_refused_clearly_and_writes_nothing(world: World) -> None:
    admin = security_admin(world)
    now = time.time()
    long_name = "n" * 201
    alice_key = key_id(world.keys["alice"])
    cases: list[tuple[str, str, Any, int, str]] = [
        # invalid CIDRs
        ("POST", "/vendors", vendor_body("v1", networks=["10.0.0.1/8"]), 400, "invalid network"),
        ("POST", "/vendors", vendor_body("v1", networks=["not-a-cidr"]), 400, "invalid network"),
        ("POST", "/vendors", vendor_body("v1", networks=[]), 400, "networks"),
        (
            "POST",
            "/keys",
            {"principal": "carol", "networks": ["300.1.1.0/24"]},
            400,
            "invalid network",
        ),
        ("PATCH", f"/vendors/{VENDOR}", {"networks": ["127.0.0.0/33"]}, 400, "invalid network"),
        # unknown references
        ("POST", "/vendors", vendor_body("v1", sponsor="ghost"), 400, "'ghost' does not exist"),
        ("POST", "/vendors", vendor_body("v1", sponsor="bob"), 400, "sponsor must be"),
        ("POST", "/principals", {"name": "p1", "org": "ghost"}, 400, "'ghost' does not exist"),
        ("POST", "/keys", {"principal": "ghost"}, 400, "'ghost' does not exist"),
        ("PATCH", "/principals/ghost", {"status": "disabled"}, 400, "'ghost' does not exist"),
        ("POST", f"/keys/{NO_SUCH_KEY_ID}/revoke", {"reason": "x"}, 400, "does not exist"),
        ("POST", f"/keys/{NO_SUCH_KEY_ID}/rotate", {}, 400, "does not exist"),
        ("POST", "/vendors/ghost/status", {"status": "suspended"}, 400, "does not exist"),
        ("PATCH", "/vendors/ghost", {"seat_limit": 2}, 400, "does not exist"),
        ("PATCH", "/models/ghost", {"level": "public"}, 400, "does not exist"),
        ("GET", "/principals/ghost", None, 404, "ghost"),
        ("GET", "/vendors/ghost", None, 404, "ghost"),
        ("GET", "/models/ghost", None, 404, "ghost"),
        # duplicates
        ("POST", "/orgs", {"name": "internal"}, 409, "already exists"),
        ("POST", "/orgs", {"name": VENDOR}, 409, "already exists"),
        ("POST", "/vendors", vendor_body(VENDOR), 409, "already exists"),
        ("POST", "/principals", {"name": "alice", "org": "internal"}, 409, "already exists"),
        (
            "POST",
            "/models",
            {"name": "assistant", "upstream_url": "http://127.0.0.1:9/v1"},
            409,
            "already exists",
        ),
        # contract dates
        (
            "POST",
            "/vendors",
            vendor_body("v1", contract_start=iso(now + 20 * DAY), contract_end=iso(now + DAY)),
            400,
            "must end after it starts",
        ),
        (
            "POST",
            "/vendors",
            vendor_body("v1", contract_start=iso(now - 20 * DAY), contract_end=iso(now - DAY)),
            400,
            "in the past",
        ),
        ("POST", "/vendors", vendor_body("v1", contract_end=iso(now - DAY)), 400, "contract"),
        ("PATCH", f"/vendors/{VENDOR}", {"contract_end": iso(now - 3600)}, 400, "past"),
        ("POST", "/vendors", vendor_body("v1", contract_end="next tuesday"), 400, "contract_end"),
        # oversized names and values
        ("POST", "/orgs", {"name": long_name}, 400, "200"),
        ("POST", "/principals", {"name": long_name, "org": "internal"}, 400, "200"),
        ("POST", "/vendors", vendor_body(long_name), 400, "200"),
        (
            "POST",
            "/models",
            {"name": long_name, "upstream_url": "http://127.0.0.1:9/v1"},
            400,
            "200",
        ),
        ("POST", "/keys", {"principal": "carol", "note": long_name}, 400, "note"),
        ("POST", "/vendors", vendor_body("v1", seat_limit=0), 400, "seat_limit"),
        ("POST", "/vendors", vendor_body("v1", seat_limit=10**6), 400, "seat_limit"),
        ("POST", "/keys", {"principal": "carol", "expires_in_s": 10**9}, 400, "expires_in_s"),
        ("POST", f"/keys/{alice_key}/rotate", {"grace_s": 10**7}, 400, "grace_s"),
        # names the directory cannot hold
        ("POST", "/orgs", {"name": "bad name!"}, 400, "may contain only"),
        ("POST", "/orgs", {"name": ""}, 400, "name"),
        (
            "POST",
            "/principals",
            {"name": "p1", "org": "internal", "compartments": ["BAD"]},
            400,
            "compartment",
        ),
        # unknown fields
        ("POST", "/orgs", {"name": "o1", "colour": "red"}, 400, "colour"),
        (
            "PATCH",
            "/principals/carol",
            {"clearance": "restricted", "is_admin": True},
            400,
            "is_admin",
        ),
        ("POST", "/keys", {"principal": "carol", "secret": "mine"}, 400, "secret"),
        # wrong JSON types and values
        ("POST", "/vendors", vendor_body("v1", seat_limit="3"), 400, "seat_limit"),
        ("POST", "/vendors", vendor_body("v1", networks="127.0.0.0/8"), 400, "networks"),
        ("POST", "/orgs", {"name": 5}, 400, "name"),
        ("POST", "/keys", {"principal": "carol", "canary": "yes"}, 400, "canary"),
        ("POST", "/keys", {"principal": "carol", "expires_in_s": "3600"}, 400, "expires_in_s"),
        (
            "POST",
            "/principals",
            {"name": "p1", "org": "internal", "clearance": "top"},
            400,
            "clearance",
        ),
        ("POST", "/principals", {"name": "p1", "org": "internal", "roles": ["root"]}, 400, "roles"),
        ("POST", f"/vendors/{VENDOR}/status", {"status": "expired"}, 400, "status"),
        ("POST", f"/vendors/{VENDOR}/status", {"status": "active"}, 400, "cannot go from"),
        ("POST", f"/keys/{alice_key}/revoke", {}, 400, "reason"),
        ("POST", "/orgs", {}, 400, "name"),
        # bodies that are not JSON objects
        ("POST", "/orgs", b"name=research", 400, "JSON"),
        ("POST", "/orgs", b"{", 400, "JSON"),
        ("POST", "/orgs", b"", 400, "JSON object"),
        ("POST", "/orgs", b"   ", 400, "JSON object"),
        ("POST", "/orgs", b'[{"name": "research"}]', 400, "object"),
        ("POST", "/orgs", b"null", 400, "object"),
        ("POST", "/orgs", b'"research"', 400, "object"),
        ("POST", "/orgs", b"\xff\xfe", 400, "JSON"),
    ]
    before = table_counts(world)
    for method, path, body, status, needle in cases:
        raw = body if isinstance(body, bytes) else None
        answer = await call(
            world, admin.key, method, path, None if raw is not None else body, raw=raw
        )
        assert answer.status == status, (method, path, body, answer.raw)
        err = answer.error
        assert err["request_id"] == answer.request_id
        assert needle.lower() in err["message"].lower(), (path, body, err)
        expected_types = {
            400: {"invalid_request", "illegal_transition"},
            404: {"not_found"},
            409: {"conflict"},
        }
        assert err["type"] in expected_types[status], err
        await expect_denied(world, answer, "admin.invalid_request", actor=admin.id)
    assert table_counts(world) == before


async def test_oversized_bodies_are_refused_with_413(world: World) -> None:
    admin = security_admin(world)
    before = table_counts(world)
    big = orjson.dumps({"name": "x" * (ADMIN_MAX_BODY_BYTES + 10)})
    answer = await call(world, admin.key, "POST", "/orgs", raw=big)
    assert answer.status == 413, answer.raw
    assert answer.error["type"] == "request_too_large"
    await expect_denied(world, answer, "admin.invalid_request", actor=admin.id)

    # Without a declared length (chunked), the limit holds while reading.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(ADMIN_MAX_BODY_BYTES // 4096 + 2):
            yield b"y" * 4096
        yield b'"}'

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{world.base}{ADMIN_PREFIX}/orgs",
            data=chunks(),
            headers={"authorization": f"Bearer {admin.key}", "content-type": "application/json"},
        ) as resp,
    ):
        payload = orjson.loads(await resp.read())
        assert resp.status == 413, payload
        assert payload["error"]["type"] == "request_too_large"
    # Just under the limit is read (and judged on its merits).
    fits = orjson.dumps({"name": "z" * (ADMIN_MAX_BODY_BYTES - 100)})
    answer = await call(world, admin.key, "POST", "/orgs", raw=fits)
    assert answer.status == 400, answer.raw
    assert table_counts(world) == before


async def test_unknown_endpoints_and_methods_get_the_admin_shape(world: World) -> None:
    admin = security_admin(world)
    before = table_counts(world)
    for key in (admin.key, None):
        for method, path, status in (
            ("GET", "/nope", 404),
            ("GET", "/principals/bob/keys", 404),
            ("POST", "/keys/abc/explode", 404),
            ("DELETE", "/orgs", 405),
            ("PUT", "/principals/bob", 405),
            ("DELETE", "/keys/abc/revoke", 405),
            ("POST", "/openapi.json", 405),
        ):
            answer = await call(world, key, method, path, {} if method != "GET" else None)
            assert answer.status == status, (method, path, answer.raw)
            err = answer.error
            assert err["rule"] is None
            assert err["type"] == ("not_found" if status == 404 else "invalid_request")
            # The data plane's shapes are not used here.
            assert "model" not in err["message"].lower()
    assert table_counts(world) == before


async def test_error_messages_never_echo_an_upstream_key(world: World) -> None:
    admin = security_admin(world)
    secret = "sk-do-not-echo-7f3a9c1e5b2d4f6a8c0e"
    url = "http://127.0.0.1:9/v1"
    cases = [
        (
            "POST",
            "/models",
            {"name": "m1", "upstream_url": url, "upstream_key": secret, "auth_style": "none"},
        ),
        ("POST", "/models", {"name": "assistant", "upstream_url": url, "upstream_key": secret}),
        ("POST", "/models", {"name": "m1", "upstream_url": "ftp://x/", "upstream_key": secret}),
        ("POST", "/models", {"name": "m1", "upstream_url": f"http://u:{secret}@127.0.0.1/v1"}),
        ("POST", "/models", {"name": "m1", "upstream_url": f"http://127.0.0.1/v1?key={secret}"}),
        ("POST", "/models", {"name": "m1", "upstream_url": url, "upstream_key": secret * 300}),
        ("POST", "/models", {"name": "m1", "upstream_url": url, "upstream_key": [secret]}),
        (
            "POST",
            "/models",
            {"name": "m1", "upstream_url": url, "upstream_key": secret, "x": secret},
        ),
        ("POST", "/models", {"name": "m1", "upstream_url": url, "api_key": secret}),
        (
            "POST",
            "/models",
            {"name": "m1", "upstream_url": url, "upstream_key": secret, "level": 3},
        ),
        ("PATCH", "/models/assistant", {"upstream_key": secret, "clear_upstream_key": True}),
        ("PATCH", "/models/assistant", {"upstream_key": secret, "auth_style": "none"}),
        ("PATCH", "/models/ghost", {"upstream_key": secret}),
        ("PATCH", "/models/assistant", {"upstream_key": ""}),
        ("PATCH", "/models/assistant", {"upstream_key": {"k": secret}}),
    ]
    before = table_counts(world)
    for method, path, body in cases:
        answer = await call(world, admin.key, method, path, body)
        assert 400 <= answer.status < 500, (body, answer.raw)
        assert answer.error
        assert secret.encode() not in answer.raw, answer.raw
        assert secret not in str(dict(answer.headers))
    assert table_counts(world) == before
    await world.settle()
    assert secret.encode() not in world.raw_audit()


# ── OpenAPI ──────────────────────────────────────────────────────────────────────────────
def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, ref
        node = node[part]
    return node


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs_in(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs_in(v)]
    return []


async def test_openapi_document_describes_every_route(world: World) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{world.base}{ADMIN_PREFIX}/openapi.json",
            headers={"authorization": f"Bearer {world.admin_key}"},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "application/json"
        doc = orjson.loads(await resp.read())
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["garrisonKey"]["scheme"] == "bearer"
    assert "Error" in doc["components"]["schemas"]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    expected = {(r.method, ADMIN_PREFIX + r.path) for r in ROUTES}
    assert documented == expected
    op_ids = []
    for route in ROUTES:
        op = doc["paths"][ADMIN_PREFIX + route.path][route.method.lower()]
        op_ids.append(op["operationId"])
        assert op["summary"] == route.summary
        assert str(route.status) in op["responses"]
        assert op["security"] == [{"garrisonKey": []}]
        path_params = re.findall(r"\{([a-z_]+)\}", route.path)
        declared = {p["name"]: p for p in op.get("parameters", [])}
        for name in path_params:
            assert declared[name]["in"] == "path" and declared[name]["required"] is True
        for name, *_ in route.query:
            assert declared[name]["in"] == "query"
        if route.body is None:
            assert "requestBody" not in op, route.path
            continue
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{route.body.__name__}"
        schema = resolve(doc, ref)
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False, route.body.__name__
        assert set(schema["properties"]) == set(route.body.model_fields)
        required = {n for n, f in route.body.model_fields.items() if f.is_required()}
        assert set(schema.get("required", [])) == required
    assert len(op_ids) == len(set(op_ids))
    for ref in refs_in(doc):
        resolve(doc, ref)
    # The document names no secret: the upstream key field is described, never exemplified.
    assert UPSTREAM_KEY.encode() not in orjson.dumps(doc)


# ── secrets ──────────────────────────────────────────────────────────────────────────────
async def test_keys_and_upstream_credentials_never_leak(world: World) -> None:
    transcript = Transcript()
    issued = await full_flow(world, transcript)
    # Reads after the fact show ids only.
    admin = security_admin(world)
    for path in ("/keys", "/principals/dave", "/principals/ruth", "/vendors/acme", "/models"):
        answer = await call(world, admin.key, "GET", path, transcript=transcript)
        assert answer.status == 200
    for token in issued:
        assert transcript.count(token) == 1, token  # its create or rotate response only
        assert transcript.count(secret_of(token)) == 1
        assert transcript.count(key_id(token)) > 1  # the id is public and shown
    for secret in (world.admin_key, secret_of(world.admin_key), UPSTREAM_KEY, NEW_UPSTREAM_KEY):
        assert transcript.count(secret) == 0, secret
    await world.settle()
    audit = world.raw_audit()
    for token in [*issued, world.admin_key, *world.keys.values()]:
        assert token.encode() not in audit
        assert secret_of(token).encode() not in audit
    assert UPSTREAM_KEY.encode() not in audit
    assert NEW_UPSTREAM_KEY.encode() not in audit
    # ...while the ids are there, so the log says which key did what.
    for token in issued:
        assert key_id(token).encode() in audit


# ── admin reads are durable before they are answered ──────────────────────────────────────
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
        with hold_audit_lock(world.settings.database_url):
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
