"""Canary keys stay armed: a vendor-manager cannot revoke or rotate one (and trying raises an
alert); a security-admin can, and that raises an alert too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from garrison.domain import Level, PrincipalKind
from tests.support.admin import admin_call, invite_and_enroll, make_admin
from tests.support.world import World

pytestmark = pytest.mark.e2e

VENDOR = "contractor-co"


@pytest.fixture
async def vm(world: World) -> str:
    key = make_admin(world, "vm-contractor", ["vendor-manager"], org=VENDOR)
    await world.reload()
    return key


SERVICE = "bob-ci"


@pytest.fixture
async def svc(world: World) -> str:
    """The vendor's service account (owned by bob): admins make keys, canaries included, for
    service accounts only."""
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": SERVICE, "org": VENDOR, "kind": "service", "owner": "bob"},
    )
    assert status == 201, body
    return SERVICE


async def plant_canary(world: World, principal: str = SERVICE) -> str:
    status, body = await admin_call(
        world, world.admin_key, "POST", "/keys", {"principal": principal, "canary": True}
    )
    assert status == 201, body
    return str(body["id"])


def legacy_person_canary(world: World) -> str:
    """A canary held by a person, from before issue 12 (no route makes one now; set-up
    writes it as the migration left it: provenance legacy)."""
    return world.directory.create_key("bob", now=time.time(), canary=True).key.key_id


async def alerts_for(world: World, key_id: str, rule_id: str) -> list[dict[str, Any]]:
    """The alerts about ``key_id`` from ``rule_id`` (waits a little for the detection thread)."""
    deadline = time.monotonic() + 5
    while True:
        status, body = await admin_call(world, world.admin_key, "GET", "/alerts")
        assert status == 200, body
        found = [a for a in body if a["rule_id"] == rule_id and a["subject"]["id"] == key_id]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def key_state(world: World, key_id: str) -> str:
    status, body = await admin_call(world, world.admin_key, "GET", "/keys")
    assert status == 200
    (key,) = [k for k in body if k["id"] == key_id]
    return str(key["state"])


@pytest.mark.parametrize(
    ("op", "path_body"), [("revoke", {"reason": "cleanup"}), ("rotate", {"grace_s": 0})]
)
async def test_vendor_manager_cannot_retire_a_canary_and_trying_raises_an_alert(
    world: World, vm: str, svc: str, op: str, path_body: dict[str, Any]
) -> None:
    canary = await plant_canary(world)
    keys_before = await admin_call(world, world.admin_key, "GET", "/keys")
    status, body = await admin_call(world, vm, "POST", f"/keys/{canary}/{op}", path_body)
    assert status == 403, body
    assert body["error"]["rule"] == "canary-guard"
    assert await key_state(world, canary) == "active"
    # No successor was issued.
    assert len((await admin_call(world, world.admin_key, "GET", "/keys"))[1]) == len(keys_before[1])
    (alert,) = await alerts_for(world, canary, "canary-key-retire-refused")
    assert alert["reason"] == f"credential.canary_{op}_refused"
    assert alert["data"]["admin"] == "vm-contractor"
    assert alert["severity"] == "high"
    await world.settle()
    (denied,) = [
        e for e in world.events("admin.denied") if e["request_id"] == body["error"]["request_id"]
    ]
    assert denied["data"]["reasons"] == ["admin.role_lacks_action"]


async def test_vendor_manager_still_retires_ordinary_keys(world: World, vm: str, svc: str) -> None:
    status, body = await admin_call(world, world.admin_key, "POST", "/keys", {"principal": svc})
    assert status == 201
    status, rotated = await admin_call(world, vm, "POST", f"/keys/{body['id']}/rotate", {})
    assert status == 201, rotated
    assert not await alerts_for_quick(world, body["id"])
    # A person's ordinary key too: it is revoked and bob gets an enrollment code, no alert.
    status, own = await invite_and_enroll(world, world.admin_key, "bob")
    assert status == 201, own
    status, rotated = await admin_call(world, vm, "POST", f"/keys/{own['id']}/rotate", {})
    assert status == 200, rotated
    assert rotated["enrollment_code"]
    assert not await alerts_for_quick(world, own["id"])


async def alerts_for_quick(world: World, key_id: str) -> list[dict[str, Any]]:
    _, body = await admin_call(world, world.admin_key, "GET", "/alerts")
    return [a for a in body if a["subject"]["id"] == key_id]


@pytest.mark.parametrize(
    ("op", "path_body", "want"),
    [("revoke", {"reason": "rotation"}, 200), ("rotate", {"grace_s": 0}, 201)],
)
async def test_security_admin_retires_a_canary_and_that_raises_an_alert(
    world: World, svc: str, op: str, path_body: dict[str, Any], want: int
) -> None:
    canary = await plant_canary(world)
    status, body = await admin_call(
        world, world.admin_key, "POST", f"/keys/{canary}/{op}", path_body
    )
    assert status == want, body
    assert await key_state(world, canary) == "revoked"
    (alert,) = await alerts_for(world, canary, "canary-key-retired")
    assert alert["reason"] == f"credential.canary_{op}_done"
    assert alert["principal_id"] is not None


async def test_vendor_rotation_leaves_canaries_armed(world: World, vm: str, svc: str) -> None:
    canary = await plant_canary(world)
    person_canary = legacy_person_canary(world)
    await world.reload()
    status, body = await admin_call(
        world, vm, "POST", f"/vendors/{VENDOR}/rotate-keys", {"reason": "leak"}
    )
    assert status == 201, body
    assert await key_state(world, canary) == "active"
    assert await key_state(world, person_canary) == "active"
    # The rotation did run: the account's ordinary keys were replaced and bob re-invited.
    assert any(k.get("enrollment_code") for k in body["issued"])
    assert any(k.get("key") for k in body["issued"])


@pytest.mark.parametrize("actor", ["vendor-manager", "security-admin"])
async def test_a_persons_legacy_canary_is_guarded_on_the_enrollment_rotation_path(
    world: World, vm: str, actor: str
) -> None:
    # Rotating a person's key revokes it and re-invites them; for a canary that is still
    # a security-admin's alone, and raises an alert either way.
    canary = legacy_person_canary(world)
    await world.reload()
    key = vm if actor == "vendor-manager" else world.admin_key
    status, body = await admin_call(world, key, "POST", f"/keys/{canary}/rotate", {})
    if actor == "vendor-manager":
        assert status == 403, body
        assert body["error"]["rule"] == "canary-guard"
        assert await key_state(world, canary) == "active"
        (alert,) = await alerts_for(world, canary, "canary-key-retire-refused")
    else:
        assert status == 200, body
        assert body["enrollment_code"]
        assert await key_state(world, canary) == "revoked"
        (alert,) = await alerts_for(world, canary, "canary-key-retired")
        assert alert["reason"] == "credential.canary_rotate_done"


T = TypeVar("T")


WITHIN_S = 10.0


async def eventually(probe: Callable[[], Awaitable[T]], what: str, within: float = WITHIN_S) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.02)


def wrong_secret(key: str) -> str:
    prefix, key_id, secret = key.split("_", 2)
    return f"{prefix}_{key_id}_" + "".join("B" if c == "A" else "A" for c in secret)


def key_id(token: str) -> str:
    return token.split("_")[1]


async def alerts_by_rule(world: World, rule_id: str) -> list[dict[str, Any]]:
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


# ── detectors read the admin API ───────────────────────────────────────────────────────────
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
        return await alerts_by_rule(world, "canary-key-used")

    (alert,) = await eventually(raised, "a canary-key-used alert")
    assert alert["severity"] == "critical"
    assert alert["subject"] == {"kind": "credential", "id": canary.key.key_id}
    await world.settle()
    used = [
        e
        for e in world.events("admin.read")
        if e["credential_id"] == canary.key.key_id and e["data"].get("client_address")
    ]
    assert len(used) == 1
    assert used[0]["principal_id"] == canary.principal_id
    assert used[0]["data"] == {"method": method, "path": path, "client_address": "127.0.0.1"}


async def test_wrong_secrets_on_whoami_raise_a_refusal_burst(world: World) -> None:
    bad = wrong_secret(world.keys["carol"])
    for _ in range(19):
        status, _ = await admin_call(world, bad, "GET", "/whoami")
        assert status == 401
    await world.settle()
    await asyncio.sleep(0.3)
    assert await alerts_by_rule(world, "refusal-burst") == []  # under the threshold of 20
    status, _ = await admin_call(world, bad, "GET", "/whoami")
    assert status == 401

    async def raised() -> list[dict[str, Any]]:
        return await alerts_by_rule(world, "refusal-burst")

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
        return await alerts_by_rule(world, "refusal-burst")

    (alert,) = await eventually(raised, "a refusal-burst alert")
    assert alert["subject"] == {"kind": "address", "id": "127.0.0.1"}
