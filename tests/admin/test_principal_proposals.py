"""Creating a principal with access takes two admins: a principal above internal, in a
compartment or with a role is a two-person proposal (202, kind ``principal-create``) applied
when a second security-admin approves; a bad proposal is refused at once; a plain internal
principal is created at once (201).
"""

from __future__ import annotations

from typing import Any

import pytest

from garrison.domain import Level, PrincipalKind
from tests.support import db
from tests.support.admin import Admins, make_admin, table_counts
from tests.support.world import World

pytestmark = pytest.mark.e2e


def count(world: World, table: str) -> int:
    """Rows in ``table`` (on either database)."""
    (found,) = db.rows(world.directory, f"SELECT count(*) AS n FROM {table}")  # noqa: S608
    return int(found["n"])


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


# ── creating a principal with access takes two admins ──────────────────────────────────────
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
