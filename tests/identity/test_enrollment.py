"""Enrollment over HTTP against a running gateway (set-up through tests/support fixtures):
attempt limits, one answer for every bad code, single use, the lifetime limit; two-person
rules for security-admins and re-enabling role holders; locks on a person covering what they
own and issued."""

from __future__ import annotations

import time

import pytest

from garrison.domain import Level, PrincipalKind
from garrison.identity.enroll_limits import (
    ENROLL_ATTEMPTS_GLOBAL,
    ENROLL_ATTEMPTS_PER_SOURCE,
    ENROLL_WINDOW_S,
    EnrollLimiter,
)
from garrison.store import enrollment
from garrison.store.invitations import ENROLL_CODE_TTL_S
from tests.support.admin import admin_call, make_admin
from tests.support.world import World

pytestmark = pytest.mark.e2e


def test_the_limiter_holds_per_source_and_overall() -> None:
    lim = EnrollLimiter()
    assert all(lim.allow("a", 0.0) for _ in range(ENROLL_ATTEMPTS_PER_SOURCE))
    assert not lim.allow("a", 1.0)
    assert lim.allow("a", ENROLL_WINDOW_S + 0.5)  # the window slides
    lim = EnrollLimiter()
    allowed = sum(lim.allow(f"10.0.{i // 250}.{i % 250}", 0.0) for i in range(500))
    assert allowed == ENROLL_ATTEMPTS_GLOBAL


def test_an_ipv6_guesser_rotating_through_their_64_is_one_source() -> None:
    lim = EnrollLimiter()
    allowed = sum(lim.allow(f"2001:db8:1:2::{i:x}", 0.0) for i in range(200))
    assert allowed == ENROLL_ATTEMPTS_PER_SOURCE
    assert lim.allow("2001:db8:1:3::1", 0.0)  # another /64 is another source
    # The IPv4-mapped form of an address is that address.
    assert all(lim.allow("192.0.2.7", 0.0) for _ in range(ENROLL_ATTEMPTS_PER_SOURCE))
    assert not lim.allow("::ffff:192.0.2.7", 0.0)


def test_a_code_lives_at_most_a_day() -> None:
    assert ENROLL_CODE_TTL_S <= 24 * 3600


async def _enroll(world: World, code: str, addr: str) -> tuple[int, object]:
    return await admin_call(world, None, "POST", "/enroll", {"code": code}, local_addr=addr)


async def test_bad_codes_get_one_answer_and_every_failure_is_audited(world: World) -> None:
    admin = make_admin(world, "sec2", ["security-admin"])
    await world.reload()
    status, issued = await admin_call(
        world, admin, "POST", "/principals", {"name": "pat", "org": "internal", "invite": True}
    )
    assert status == 201, issued
    code = issued["enrollment_code"]
    status, ok = await _enroll(world, code, "127.0.2.1")
    assert status == 201 and ok["provenance"] == "enrolled"  # type: ignore[index]
    answers = []
    for bad in (code, "ge_" + "A" * 43, "nonsense"):  # used, unknown, malformed
        status, body = await _enroll(world, bad, "127.0.3.1")
        answers.append((status, body["error"]["message"]))  # type: ignore[index]
    assert len(set(answers)) == 1 and answers[0][0] == 403
    # An expired code: the same answer.
    now = time.time()
    pid = world.directory.create_principal(
        "quin", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    old = enrollment.invite(world.directory, pid, now=now - ENROLL_CODE_TTL_S - 1)
    status, body = await _enroll(world, old.code.reveal(), "127.0.3.1")
    assert (status, body["error"]["message"]) == answers[0]  # type: ignore[index]
    refused = [e for e in world_events(world) if e["name"] == "enrollment.refused"]
    assert len(refused) == 4


async def test_the_endpoint_stops_a_guesser(world: World) -> None:
    statuses = []
    for _ in range(ENROLL_ATTEMPTS_PER_SOURCE + 2):
        status, _ = await _enroll(world, "ge_" + "B" * 43, "127.0.4.1")
        statuses.append(status)
    assert statuses[:ENROLL_ATTEMPTS_PER_SOURCE] == [403] * ENROLL_ATTEMPTS_PER_SOURCE
    assert statuses[-2:] == [429, 429]
    status, _ = await _enroll(world, "ge_" + "B" * 43, "127.0.5.1")
    assert status == 403  # another address still gets its own tries


async def test_changes_to_a_security_admin_take_two(world: World) -> None:
    sec2 = make_admin(world, "sec2", ["security-admin"])
    make_admin(world, "sec3", ["security-admin"])
    apv = make_admin(world, "apv", ["approver"])
    await world.reload()
    status, body = await admin_call(
        world, sec2, "PATCH", "/principals/sec3", {"status": "disabled"}
    )
    assert status == 202, body  # any change to a security-admin
    status, body = await admin_call(world, sec2, "PATCH", "/principals/apv", {"status": "disabled"})
    assert status == 200, body  # disabling a role holder: at once
    status, body = await admin_call(world, sec2, "PATCH", "/principals/apv", {"status": "active"})
    assert status == 202, body  # re-enabling one takes two
    assert apv


async def test_a_lock_on_a_person_covers_what_they_own(world: World) -> None:
    sec2 = make_admin(world, "sec2", ["security-admin"])
    await world.reload()
    status, _ = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": "bot", "org": "internal", "kind": "service", "owner": "sec2"},
    )
    assert status == 201
    status, issued = await admin_call(world, sec2, "POST", "/keys", {"principal": "bot"})
    assert status == 201 and issued["provenance"] == "service"
    status, lock = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "principal", "target": "sec2", "reason": "x"},
    )
    assert status == 201, lock
    status, _ = await admin_call(world, issued["key"], "GET", "/access/requests")
    assert status == 403  # the owner's lock covers the service account and the key


def world_events(world: World) -> list[dict[str, object]]:
    import sqlite3

    import orjson

    conn = sqlite3.connect(world.db_path)
    try:
        return [orjson.loads(r[0]) for r in conn.execute("SELECT record FROM audit_events")]
    finally:
        conn.close()


async def test_a_service_key_above_the_issuer_takes_a_second_admin_once(world: World) -> None:
    low = make_admin(world, "low-sec", ["security-admin"])  # clearance internal
    high = make_admin(world, "high-sec", ["security-admin"], clearance=Level.CRITICAL)
    world.directory.create_principal(
        "etl",
        org="internal",
        kind=PrincipalKind.SERVICE,
        clearance=Level.RESTRICTED,
        now=time.time(),
    )
    await world.reload()
    status, body = await admin_call(world, low, "POST", "/keys", {"principal": "etl"})
    assert status == 202, body
    change = body["pending"]["id"]
    assert "key" not in body["pending"]
    status, body = await admin_call(world, high, "POST", f"/changes/{change}/approve")
    assert status == 200, body
    status, body = await admin_call(world, low, "POST", "/keys", {"principal": "etl"})
    assert status == 201 and body["provenance"] == "service", body
    status, body = await admin_call(world, low, "POST", "/keys", {"principal": "etl"})
    assert status == 202, body  # the approval was spent on one key
    status, body = await admin_call(world, high, "POST", "/keys", {"principal": "etl"})
    assert status == 201, body  # within the issuer's own clearance: at once
