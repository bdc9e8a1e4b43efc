"""Containment holds against key rotation: a locked key, person or vendor is issued no new
key through the admin API, and a lock on a key carries to the keys rotated from it."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from garrison.identity.keys import parse_key
from garrison.store.key_containment import LINEAGE_MAX_KEYS, successors
from tests.support.admin import admin_call, invite_and_enroll, make_admin
from tests.support.world import World

pytestmark = pytest.mark.e2e

VENDOR = "contractor-co"
USER = [{"role": "user", "content": "x"}]


def key_id(token: str) -> str:
    parsed = parse_key(token)
    assert parsed is not None
    return parsed.key_id


async def chat(world: World, key: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": "assistant", "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        await resp.read()
        return resp.status


async def lock(world: World, kind: str, target: str) -> str:
    status, body = await admin_call(
        world, world.admin_key, "POST", "/locks", {"kind": kind, "target": target, "reason": "ir"}
    )
    assert status == 201, body
    return str(body["id"])


async def assert_refused_for_lock(
    world: World, status: int, body: Any, lock_id: str, actor_key: str
) -> None:
    assert status == 403, body
    assert body["error"]["rule"] == "target-locked"
    assert lock_id in body["error"]["message"]
    await world.settle()
    denied = [
        e for e in world.events("admin.denied") if e["request_id"] == body["error"]["request_id"]
    ]
    assert len(denied) == 1
    assert denied[0]["data"]["reasons"] == ["lock.active"]
    assert denied[0]["data"]["rule"] == "target-locked"
    assert denied[0]["credential_id"] == key_id(actor_key)


@pytest.fixture
async def vm(world: World) -> str:
    key = make_admin(world, "vm-contractor", ["vendor-manager"], org=VENDOR)
    await world.reload()
    return key


async def service_key(world: World, name: str) -> dict[str, Any]:
    """A key (id and secret) for service account ``name``, made by the security-admin."""
    status, body = await admin_call(world, world.admin_key, "POST", "/keys", {"principal": name})
    assert status == 201, body
    return dict(body)


@pytest.fixture
async def svc(world: World) -> dict[str, Any]:
    """The vendor's service account ``bob-ci``, owned by bob, and a key for it: admins make
    keys for service accounts only, so this is the key an admin creates and rotates."""
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": "bob-ci", "org": VENDOR, "kind": "service", "owner": "bob"},
    )
    assert status == 201, body
    return await service_key(world, "bob-ci")


@pytest.fixture
async def bob_own(world: World) -> str:
    """Bob's own key: invited by the security-admin, enrolled by bob from his machine."""
    status, body = await invite_and_enroll(world, world.admin_key, "bob")
    assert status == 201, body
    return str(body["key"])


@pytest.mark.parametrize("locked", ["credential", "principal", "owner", "vendor"])
async def test_a_locked_service_key_cannot_be_rotated(
    world: World, vm: str, svc: dict[str, Any], locked: str
) -> None:
    target = {"credential": svc["id"], "principal": "bob-ci", "owner": "bob", "vendor": VENDOR}
    lock_id = await lock(world, "principal" if locked == "owner" else locked, target[locked])
    # A vendor lock covers the vendor's own manager too: a security-admin tries instead.
    actor = world.admin_key if locked == "vendor" else vm
    before = len(world.events("credential.created"))
    status, body = await admin_call(
        world, actor, "POST", f"/keys/{svc['id']}/rotate", {"grace_s": 0, "reason": "routine"}
    )
    await assert_refused_for_lock(world, status, body, lock_id, actor)
    assert len(world.events("credential.created")) == before
    # The old key is not retired either: nothing was written.
    assert not world.events("credential.rotated")
    assert not world.events("credential.revoked")


@pytest.mark.parametrize("locked", ["credential", "principal", "vendor"])
async def test_a_locked_persons_key_is_not_rotated_and_no_enrollment_code_is_issued(
    world: World, vm: str, bob_own: str, locked: str
) -> None:
    # An admin's rotation of a person's key revokes it and hands the person a new
    # enrollment code: under a lock neither happens (the code would be a key in waiting).
    target = {"credential": key_id(bob_own), "principal": "bob", "vendor": VENDOR}[locked]
    lock_id = await lock(world, locked, target)
    actor = world.admin_key if locked == "vendor" else vm
    codes_before = len(world.events("enrollment.issued"))
    status, body = await admin_call(
        world, actor, "POST", f"/keys/{key_id(bob_own)}/rotate", {"grace_s": 0, "reason": "r"}
    )
    await assert_refused_for_lock(world, status, body, lock_id, actor)
    assert "enrollment_code" not in json_text(body)
    assert len(world.events("enrollment.issued")) == codes_before
    assert not [e for e in world.events("credential.revoked") if e["entity_id"] == key_id(bob_own)]


def json_text(body: Any) -> str:
    return orjson.dumps(body).decode()


@pytest.mark.parametrize("locked", ["principal", "vendor"])
async def test_no_new_key_for_a_locked_person_or_vendor(
    world: World, vm: str, svc: dict[str, Any], bob_own: str, locked: str
) -> None:
    # A code bob was given before the lock, not yet redeemed.
    status, pending = await admin_call(world, world.admin_key, "POST", "/principals/bob/invite")
    assert status == 201, pending
    lock_id = await lock(world, locked, "bob" if locked == "principal" else VENDOR)
    created_before = len(world.events("credential.created"))
    if locked == "principal":
        # A lock on bob covers the service account he owns.
        status, body = await admin_call(world, vm, "POST", "/keys", {"principal": "bob-ci"})
        await assert_refused_for_lock(world, status, body, lock_id, vm)
    # A security-admin is refused the same way: lift the lock first.
    status, body = await admin_call(
        world, world.admin_key, "POST", "/keys", {"principal": "bob-ci"}
    )
    await assert_refused_for_lock(world, status, body, lock_id, world.admin_key)
    # The person gets no enrollment code...
    codes_before = len(world.events("enrollment.issued"))
    status, body = await admin_call(world, world.admin_key, "POST", "/principals/bob/invite")
    await assert_refused_for_lock(world, status, body, lock_id, world.admin_key)
    assert len(world.events("enrollment.issued")) == codes_before
    # ...cannot redeem the one issued before the lock...
    status, body = await admin_call(
        world,
        None,
        "POST",
        "/enroll",
        {"code": pending["enrollment_code"]},
        local_addr="127.1.250.7",
    )
    assert status == 403, body
    assert body["error"]["rule"] == "target-locked"
    await world.settle()
    (refused,) = [
        e
        for e in world.events("enrollment.refused")
        if e["request_id"] == body["error"]["request_id"]
    ]
    assert refused["data"]["reasons"] == ["lock.active"]
    # ...and cannot make one with a key of his own.
    status, body = await admin_call(world, bob_own, "POST", "/keys/self", {})
    assert status == 403, body
    assert "key" not in body
    assert len(world.events("credential.created")) == created_before


async def test_keys_are_issued_again_once_the_lock_is_lifted(
    world: World, vm: str, svc: dict[str, Any]
) -> None:
    lock_id = await lock(world, "principal", "bob")
    status, _ = await admin_call(world, vm, "POST", "/keys", {"principal": "bob-ci"})
    assert status == 403
    status, _ = await invite_and_enroll(world, vm, "bob")
    assert status == 403
    status, body = await admin_call(
        world, world.admin_key, "POST", f"/locks/{lock_id}/lift", {"reason": "cleared"}
    )
    assert status == 200, body
    status, body = await admin_call(world, vm, "POST", "/keys", {"principal": "bob-ci"})
    assert status == 201, body
    assert await chat(world, body["key"]) == 200
    status, body = await invite_and_enroll(world, vm, "bob")
    assert status == 201, body
    assert await chat(world, body["key"]) == 200


async def test_a_lock_on_a_key_carries_to_its_successors(
    world: World, vm: str, svc: dict[str, Any]
) -> None:
    # Rotated with a grace period, the old key and its successor (and the successor's own
    # successor) are all live; then the old key is locked.
    old = svc["key"]
    other = (await service_key(world, "bob-ci"))["key"]
    status, first = await admin_call(
        world, vm, "POST", f"/keys/{key_id(old)}/rotate", {"grace_s": 3600, "reason": "r1"}
    )
    assert status == 201, first
    status, second = await admin_call(
        world, vm, "POST", f"/keys/{first['id']}/rotate", {"grace_s": 3600, "reason": "r2"}
    )
    assert status == 201, second
    for token in (old, first["key"], second["key"]):
        assert await chat(world, token) == 200
    lock_id = await lock(world, "credential", key_id(old))
    for token in (old, first["key"], second["key"]):
        assert await chat(world, token) == 403
    await world.settle()
    refused = [e for e in world.events("request.denied") if e["data"].get("lock_id") == lock_id]
    assert {e["credential_id"] for e in refused} == {key_id(old), first["id"], second["id"]}
    # ...and a successor cannot be rotated out from under the lock either.
    status, body = await admin_call(
        world, vm, "POST", f"/keys/{second['id']}/rotate", {"grace_s": 0, "reason": "escape"}
    )
    await assert_refused_for_lock(world, status, body, lock_id, vm)
    # Other keys of the same account are not covered: the lock is on one lineage.
    assert await chat(world, other) == 200


async def test_a_lock_on_a_persons_own_key_carries_to_their_own_rotations(
    world: World, bob_own: str
) -> None:
    # A person rotates their own key (with a grace period, as only they may); a lock on
    # the first key covers the successor and the spare key made with it (whoever held the
    # locked key could have made those), and nobody rotates out from under it.
    status, first = await admin_call(
        world, bob_own, "POST", f"/keys/{key_id(bob_own)}/rotate", {"grace_s": 3600}
    )
    assert status == 201, first
    status, spare = await admin_call(world, bob_own, "POST", "/keys/self", {})
    assert status == 201, spare
    for token in (bob_own, first["key"], spare["key"]):
        assert await chat(world, token) == 200
    lock_id = await lock(world, "credential", key_id(bob_own))
    for token in (bob_own, first["key"], spare["key"]):
        assert await chat(world, token) == 403
    # The locked keys cannot sign in; an admin cannot rotate them either.
    for token in (first["key"], spare["key"]):
        status, body = await admin_call(
            world, token, "POST", f"/keys/{first['id']}/rotate", {"grace_s": 0}
        )
        assert status == 403, body
    status, body = await admin_call(
        world, world.admin_key, "POST", f"/keys/{spare['id']}/rotate", {"grace_s": 0}
    )
    await assert_refused_for_lock(world, status, body, lock_id, world.admin_key)


async def test_vendor_rotation_revokes_but_issues_no_key_to_a_locked_person(
    world: World, vm: str
) -> None:
    await lock(world, "principal", "bob")
    status, body = await admin_call(
        world, world.admin_key, "POST", f"/vendors/{VENDOR}/rotate-keys", {"reason": "leak"}
    )
    assert status == 201, body
    issued_to = {k["principal_id"] for k in body["issued"]}
    bob = next(p for p in world.gateway.state.snapshot.principals.values() if p.name == "bob")
    assert bob.id not in issued_to
    assert await chat(world, world.keys["bob"]) == 401


def test_lineage_walk_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from garrison.store import key_containment

    # A chain of four rotations (set-up, written directly); with the limit at 2 the walk
    # stops after two keys instead of following the whole chain.
    now = time.time()
    current = key_id(world.keys["carol"])
    chain = []
    for _ in range(4):
        current = world.directory.rotate_key(current, now=now, grace_s=60).key.key_id
        chain.append(current)
    with world.directory.engine.connect() as conn:
        assert successors(conn, key_id(world.keys["carol"])) == chain
        monkeypatch.setattr(key_containment, "LINEAGE_MAX_KEYS", 2)
        assert len(successors(conn, key_id(world.keys["carol"]))) == 2
    assert LINEAGE_MAX_KEYS >= 3650  # ten years of daily rotation
