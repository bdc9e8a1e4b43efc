"""Changing a principal (clearance, compartments, roles, status) through ``Directory``.

Every accepted change returns ``{field: [before, after]}`` and records exactly that in one
``principal.updated`` event (plus one change-feed row) in the same transaction; every refusal
is a ``BadRequest`` naming the rule and writes nothing; a change to nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind, Status, VendorStatus
from garrison.errors import BadRequest, Conflict
from garrison.keyring import Sealer
from garrison.store import Directory
from garrison.store.changes import principal_change_is_sensitive
from tests.support.db import audit_rows, nothing_written, one, row, sql
from tests.support.db import events as event_records
from tests.support.db import row_counts as counts

NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    """``admin`` (the only security-admin, from init), ``alice`` (internal) and the vendor
    ``acme`` (ceiling internal + cyber, two seats) with ``vic`` in it."""
    directory = open_directory(initialized.settings, actor="test")
    directory.create_principal(
        "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    directory.create_vendor(
        "acme",
        sponsor="alice",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.1.0.0/16"],
        seat_limit=2,
        ceiling_level=Level.INTERNAL,
        ceiling_compartments=["cyber"],
        now=NOW,
    )
    directory.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    directory.create_principal(
        "vic", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.PUBLIC, now=NOW
    )
    try:
        yield directory
    finally:
        directory.engine.dispose()


def principal_row(d: Directory, name: str) -> dict[str, Any]:
    return row(d, "principals", name)


def last_feed(d: Directory) -> tuple[str, str, str]:
    r = one(d, "SELECT entity, entity_id, op FROM change_feed ORDER BY seq DESC LIMIT 1")
    return (r["entity"], r["entity_id"], r["op"])


def events(d: Directory, name: str) -> list[dict[str, Any]]:
    out = []
    for r in audit_rows(d, name):
        decoded = orjson.loads(r["record"])
        # The query columns are copies of the record's fields.
        assert decoded["request_id"] == r["request_id"]
        assert decoded["principal_id"] == r["principal_id"]
        out.append(decoded)
    return out


@contextmanager
def writes_one_update(d: Directory, name: str) -> Iterator[None]:
    """The block writes exactly one principal row change, one change-feed row (principal,
    update) and one ``principal.updated`` event, and nothing else."""
    before = counts(d)
    yield
    after = counts(d)
    assert after == {**before, "change_feed": before["change_feed"] + 1,
                     "audit_events": before["audit_events"] + 1}  # fmt: skip
    entity, entity_id, op = last_feed(d)
    assert (entity, entity_id, op) == ("principal", principal_row(d, name)["id"], "update")


@contextmanager
def refused(d: Directory, match: str, name: str | None = None) -> Iterator[None]:
    """The block raises ``BadRequest`` matching ``match``; no table changes, and the
    principal ``name`` (if given) is exactly as it was."""
    before = counts(d)
    row = principal_row(d, name) if name else None
    with pytest.raises(BadRequest, match=match):
        yield
    assert counts(d) == before
    if name:
        assert principal_row(d, name) == row


def only_event(d: Directory) -> dict[str, Any]:
    (event,) = events(d, "principal.updated")
    return event


# ── accepted changes: before / after, returned and recorded ────────────────────────────────
def test_clearance_change_returns_and_records_before_and_after(d: Directory) -> None:
    with writes_one_update(d, "alice"):
        changes = d.update_principal("alice", now=NOW + 5, clearance=Level.RESTRICTED)
    assert changes == {"clearance": ["internal", "restricted"]}
    assert principal_row(d, "alice")["clearance"] == int(Level.RESTRICTED)
    event = only_event(d)
    alice_id = principal_row(d, "alice")["id"]
    assert event["data"] == {"name": "alice", "changes": changes}
    assert event["principal_id"] == alice_id
    assert event["actor"] == "test"
    assert event["at"] == NOW + 5
    assert event["request_id"] is None  # no origin given


def test_compartments_change_is_sorted_and_stored_as_json(d: Directory) -> None:
    d.update_principal("alice", now=NOW, compartments=["finance"])
    with writes_one_update(d, "alice"):
        changes = d.update_principal("alice", now=NOW, compartments=["zulu", "cyber", "cyber"])
    assert changes == {"compartments": [["finance"], ["cyber", "zulu"]]}
    assert principal_row(d, "alice")["compartments"] == '["cyber","zulu"]'
    assert events(d, "principal.updated")[-1]["data"]["changes"] == changes


def test_roles_change_records_before_and_after(d: Directory) -> None:
    with writes_one_update(d, "alice"):
        changes = d.update_principal("alice", now=NOW, roles=["auditor", "approver"])
    assert changes == {"roles": [[], ["approver", "auditor"]]}
    assert orjson.loads(principal_row(d, "alice")["roles"]) == ["approver", "auditor"]
    changes = d.update_principal("alice", now=NOW, roles=["auditor"])
    assert changes == {"roles": [["approver", "auditor"], ["auditor"]]}
    assert [e["data"]["changes"] for e in events(d, "principal.updated")] == [
        {"roles": [[], ["approver", "auditor"]]},
        {"roles": [["approver", "auditor"], ["auditor"]]},
    ]


def test_status_change_both_ways(d: Directory) -> None:
    with writes_one_update(d, "alice"):
        assert d.update_principal("alice", now=NOW, status=Status.DISABLED) == {
            "status": ["active", "disabled"]
        }
    assert principal_row(d, "alice")["status"] == "disabled"
    with writes_one_update(d, "alice"):
        assert d.update_principal("alice", now=NOW, status=Status.ACTIVE) == {
            "status": ["disabled", "active"]
        }
    assert principal_row(d, "alice")["status"] == "active"
    recorded = [e["data"]["changes"] for e in events(d, "principal.updated")]
    assert recorded == [{"status": ["active", "disabled"]}, {"status": ["disabled", "active"]}]


def test_set_principal_status_is_the_same_change(d: Directory) -> None:
    with writes_one_update(d, "alice"):
        d.set_principal_status("alice", Status.DISABLED, now=NOW)
    assert only_event(d)["data"]["changes"] == {"status": ["active", "disabled"]}


def test_several_fields_in_one_change_are_one_event(d: Directory) -> None:
    with writes_one_update(d, "alice"):
        changes = d.update_principal(
            "alice",
            now=NOW,
            clearance=Level.CRITICAL,
            compartments=["cyber"],
            roles=["auditor"],
            status=Status.DISABLED,
        )
    assert changes == {
        "clearance": ["internal", "critical"],
        "compartments": [[], ["cyber"]],
        "roles": [[], ["auditor"]],
        "status": ["active", "disabled"],
    }
    assert only_event(d)["data"]["changes"] == changes
    row = principal_row(d, "alice")
    assert (row["clearance"], row["compartments"], row["roles"], row["status"]) == (
        int(Level.CRITICAL),
        '["cyber"]',
        '["auditor"]',
        "disabled",
    )


def test_only_the_fields_that_differ_are_recorded(d: Directory) -> None:
    changes = d.update_principal(
        "alice", now=NOW, clearance=Level.INTERNAL, compartments=[], status=Status.DISABLED
    )
    assert changes == {"status": ["active", "disabled"]}
    assert only_event(d)["data"]["changes"] == changes


def test_principal_can_be_named_by_id(d: Directory) -> None:
    alice_id = principal_row(d, "alice")["id"]
    assert d.update_principal(alice_id, now=NOW, clearance=Level.PUBLIC) == {
        "clearance": ["internal", "public"]
    }
    assert only_event(d)["data"]["name"] == "alice"


def test_the_change_is_in_the_snapshot(d: Directory, initialized: Initialized) -> None:
    from garrison.store import load_snapshot

    d.update_principal("alice", now=NOW, clearance=Level.RESTRICTED, compartments=["cyber"])
    snap = load_snapshot(d.engine, Sealer.from_dir(initialized.settings.key_dir))
    alice = snap.principals[principal_row(d, "alice")["id"]]
    assert alice.clearance is Level.RESTRICTED and alice.compartments == frozenset({"cyber"})


# ── no-op ──────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "change",
    [
        {},
        {"clearance": Level.INTERNAL},
        {"compartments": []},
        {"roles": []},
        {"status": Status.ACTIVE},
        {"clearance": Level.INTERNAL, "compartments": [], "roles": [], "status": Status.ACTIVE},
    ],
    ids=["nothing", "same-clearance", "same-compartments", "same-roles", "same-status", "all"],
)
def test_a_change_to_nothing_returns_empty_and_writes_nothing(
    d: Directory, change: dict[str, Any]
) -> None:
    before = counts(d)
    row = principal_row(d, "alice")
    assert d.update_principal("alice", now=NOW, **change) == {}
    assert counts(d) == before
    assert principal_row(d, "alice") == row
    assert events(d, "principal.updated") == []


def test_same_compartments_in_another_order_is_no_change(d: Directory) -> None:
    d.update_principal("alice", now=NOW, compartments=["b", "a"])
    before = counts(d)
    assert d.update_principal("alice", now=NOW, compartments=["a", "b", "a"]) == {}
    assert counts(d) == before


def test_disabling_a_disabled_principal_is_no_change(d: Directory) -> None:
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    before = counts(d)
    assert d.update_principal("vic", now=NOW, status=Status.DISABLED) == {}
    assert counts(d) == before


# ── origin ─────────────────────────────────────────────────────────────────────────────────
def test_origin_is_kept_in_the_event_and_names_its_request(
    d: Directory, initialized: Initialized
) -> None:
    origin = {
        "via": "admin-api",
        "admin": "admin",
        "credential_id": "gk_test",
        "address": "10.9.8.7",
        "request_id": "req_0123456789abcdef",
    }
    via_api = Directory(
        d.engine,
        actor="prn_admin",
        pepper=b"p" * 32,
        sealer=d.sealer,
        origin=origin,
    )
    changes = via_api.update_principal("alice", now=NOW, clearance=Level.RESTRICTED)
    event = only_event(d)
    assert event["data"] == {"name": "alice", "changes": changes, "origin": origin}
    assert event["request_id"] == "req_0123456789abcdef"
    assert event["actor"] == "prn_admin"


def test_without_origin_the_event_has_no_origin(d: Directory) -> None:
    d.update_principal("alice", now=NOW, clearance=Level.RESTRICTED)
    event = only_event(d)
    assert "origin" not in event["data"] and event["request_id"] is None


# ── rule vendor-ceiling ────────────────────────────────────────────────────────────────────
def test_vendor_principal_clearance_above_the_ceiling_is_refused(d: Directory) -> None:
    with refused(d, r"rule vendor-ceiling: clearance restricted", "vic"):
        d.update_principal("vic", now=NOW, clearance=Level.RESTRICTED)


def test_vendor_principal_compartment_outside_the_ceiling_is_refused(d: Directory) -> None:
    with refused(d, r"rule vendor-ceiling: .*\['cyber', 'finance'\]", "vic"):
        d.update_principal("vic", now=NOW, compartments=["cyber", "finance"])


def test_vendor_principal_up_to_the_ceiling_is_accepted(d: Directory) -> None:
    changes = d.update_principal("vic", now=NOW, clearance=Level.INTERNAL, compartments=["cyber"])
    assert changes == {"clearance": ["public", "internal"], "compartments": [[], ["cyber"]]}


def test_disabled_vendor_principal_is_still_held_to_the_ceiling(d: Directory) -> None:
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    with refused(d, "rule vendor-ceiling", "vic"):
        d.update_principal("vic", now=NOW, clearance=Level.CRITICAL)


def test_re_enabling_above_the_ceiling_is_refused(d: Directory) -> None:
    with refused(d, "rule vendor-ceiling", "vic"):
        d.update_principal("vic", now=NOW, status=Status.ACTIVE, clearance=Level.RESTRICTED)


def test_internal_principal_has_no_ceiling(d: Directory) -> None:
    assert d.update_principal(
        "alice", now=NOW, clearance=Level.CRITICAL, compartments=["anything"]
    ) == {"clearance": ["internal", "critical"], "compartments": [[], ["anything"]]}


# ── rule vendor-seats ──────────────────────────────────────────────────────────────────────
def test_re_enabling_when_the_seats_are_full_is_refused(d: Directory) -> None:
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    for name in ("val", "vera"):
        d.create_principal(
            name, org="acme", kind=PrincipalKind.HUMAN, clearance=Level.PUBLIC, now=NOW
        )
    with refused(d, "rule vendor-seats: the vendor has 2 active principal", "vic"):
        d.update_principal("vic", now=NOW, status=Status.ACTIVE)


def test_re_enabling_with_a_free_seat_is_accepted(d: Directory) -> None:
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    d.create_principal("val", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.PUBLIC, now=NOW)
    assert d.update_principal("vic", now=NOW, status=Status.ACTIVE) == {
        "status": ["disabled", "active"]
    }


def test_changing_an_active_principal_takes_no_extra_seat(d: Directory) -> None:
    d.create_principal("val", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.PUBLIC, now=NOW)
    # Seats are full (2 of 2), but vic already holds one.
    assert d.update_principal("vic", now=NOW, clearance=Level.INTERNAL, status=Status.ACTIVE) == {
        "clearance": ["public", "internal"]
    }


@pytest.mark.parametrize("status", [VendorStatus.SUSPENDED, VendorStatus.EXPIRED])
def test_re_enabling_in_a_vendor_that_is_not_issuing_is_refused(
    d: Directory, status: VendorStatus
) -> None:
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    d.set_vendor_status("acme", status, now=NOW)
    with refused(d, f"the vendor is {status.value}", "vic"):
        d.update_principal("vic", now=NOW, status=Status.ACTIVE)


# ── vendor roles and rule service-roles ────────────────────────────────────────────────────
@pytest.mark.parametrize("role", ["security-admin", "auditor", "approver"])
def test_vendor_principal_may_hold_only_vendor_manager(d: Directory, role: str) -> None:
    with refused(d, f"may hold only the vendor-manager role .*{role}", "vic"):
        d.update_principal("vic", now=NOW, roles=["vendor-manager", role])


def test_vendor_principal_may_become_a_vendor_manager(d: Directory) -> None:
    assert d.update_principal("vic", now=NOW, roles=["vendor-manager"]) == {
        "roles": [[], ["vendor-manager"]]
    }


def test_unknown_role_is_refused(d: Directory) -> None:
    with refused(d, r"unknown role\(s\) overlord", "alice"):
        d.update_principal("alice", now=NOW, roles=["overlord"])


@pytest.mark.parametrize("role", ["security-admin", "auditor", "vendor-manager", "approver"])
def test_service_account_cannot_be_given_a_role(d: Directory, role: str) -> None:
    d.create_principal(
        "ci-bot", org="internal", kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=NOW
    )
    with refused(d, "rule service-roles: a service account cannot hold admin roles", "ci-bot"):
        d.update_principal("ci-bot", now=NOW, roles=[role])


def test_vendor_service_account_cannot_be_a_vendor_manager(d: Directory) -> None:
    d.create_principal(
        "bot", org="acme", kind=PrincipalKind.SERVICE, clearance=Level.PUBLIC, now=NOW
    )
    with refused(d, "rule service-roles", "bot"):
        d.update_principal("bot", now=NOW, roles=["vendor-manager"])


@pytest.mark.parametrize("org", ["internal", "acme"])
def test_service_account_with_a_role_cannot_be_created(d: Directory, org: str) -> None:
    with refused(d, "rule service-roles"):
        d.create_principal(
            "ci-bot",
            org=org,
            kind=PrincipalKind.SERVICE,
            clearance=Level.PUBLIC,
            roles=["vendor-manager"],
            now=NOW,
        )


def test_service_account_without_roles_is_fine(d: Directory) -> None:
    d.create_principal(
        "ci-bot", org="internal", kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=NOW
    )
    assert d.update_principal("ci-bot", now=NOW, roles=[]) == {}
    assert d.update_principal("ci-bot", now=NOW, clearance=Level.PUBLIC) == {
        "clearance": ["internal", "public"]
    }


# ── rule last-security-admin ───────────────────────────────────────────────────────────────
def test_the_last_security_admin_cannot_be_disabled(d: Directory) -> None:
    with refused(d, "rule last-security-admin", "admin"):
        d.update_principal("admin", now=NOW, status=Status.DISABLED)
    with refused(d, "rule last-security-admin", "admin"):
        d.set_principal_status("admin", Status.DISABLED, now=NOW)


def test_the_last_security_admin_cannot_lose_the_role(d: Directory) -> None:
    with refused(d, "rule last-security-admin", "admin"):
        d.update_principal("admin", now=NOW, roles=[])
    with refused(d, "rule last-security-admin", "admin"):
        d.update_principal("admin", now=NOW, roles=["auditor"])


def test_the_last_security_admin_may_change_other_things(d: Directory) -> None:
    assert d.update_principal(
        "admin", now=NOW, roles=["security-admin", "auditor"], clearance=Level.RESTRICTED
    ) == {
        "clearance": ["critical", "restricted"],
        "roles": [["security-admin"], ["auditor", "security-admin"]],
    }


def test_a_disabled_security_admin_does_not_count(d: Directory) -> None:
    d.update_principal("alice", now=NOW, roles=["security-admin"])
    d.set_principal_status("alice", Status.DISABLED, now=NOW)
    with refused(d, "rule last-security-admin", "admin"):
        d.update_principal("admin", now=NOW, status=Status.DISABLED)


def test_with_another_active_security_admin_one_may_step_down(d: Directory) -> None:
    d.update_principal("alice", now=NOW, roles=["security-admin"])
    assert d.update_principal("admin", now=NOW, roles=[]) == {"roles": [["security-admin"], []]}
    # Now alice is the last one.
    with refused(d, "rule last-security-admin", "alice"):
        d.update_principal("alice", now=NOW, status=Status.DISABLED)


def test_with_another_active_security_admin_one_may_be_disabled(d: Directory) -> None:
    d.update_principal("alice", now=NOW, roles=["security-admin"])
    assert d.update_principal("admin", now=NOW, status=Status.DISABLED) == {
        "status": ["active", "disabled"]
    }
    with refused(d, "rule last-security-admin", "alice"):
        d.update_principal("alice", now=NOW, roles=["auditor"])


def test_a_disabled_security_admin_may_lose_the_role(d: Directory) -> None:
    d.update_principal("alice", now=NOW, roles=["security-admin"])
    d.set_principal_status("alice", Status.DISABLED, now=NOW)
    assert d.update_principal("alice", now=NOW, roles=[]) == {"roles": [["security-admin"], []]}


def test_re_enabling_a_disabled_security_admin_restores_a_second_one(d: Directory) -> None:
    d.update_principal("alice", now=NOW, roles=["security-admin"])
    d.set_principal_status("alice", Status.DISABLED, now=NOW)
    d.set_principal_status("alice", Status.ACTIVE, now=NOW)
    assert d.update_principal("admin", now=NOW, status=Status.DISABLED) == {
        "status": ["active", "disabled"]
    }


# ── bad input ──────────────────────────────────────────────────────────────────────────────
def test_unknown_principal_is_refused(d: Directory) -> None:
    with refused(d, "principal 'ghost' does not exist"):
        d.update_principal("ghost", now=NOW, clearance=Level.PUBLIC)


@pytest.mark.parametrize("bad", ["Cyber Ops", "", "x" * 64, "UPPER"])
def test_invalid_compartment_is_refused(d: Directory, bad: str) -> None:
    with refused(d, "invalid compartment", "alice"):
        d.update_principal("alice", now=NOW, compartments=["cyber", bad])


# ── a disabled principal above a since-lowered ceiling ─────────────────────────────────────
@pytest.fixture
def above_lowered_ceiling(d: Directory) -> Directory:
    """vic is a disabled vendor-manager at internal; then acme's ceiling is lowered to
    public (allowed: only active principals are in the way)."""
    d.update_principal("vic", now=NOW, clearance=Level.INTERNAL, roles=["vendor-manager"])
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    d.update_vendor("acme", now=NOW, ceiling_level=Level.PUBLIC, ceiling_compartments=[])
    return d


def test_re_enabling_above_a_lowered_ceiling_is_refused(above_lowered_ceiling: Directory) -> None:
    d = above_lowered_ceiling
    with refused(d, "rule vendor-ceiling", "vic"):
        d.update_principal("vic", now=NOW, status=Status.ACTIVE)


def test_lowering_to_the_new_ceiling_then_re_enabling_is_accepted(
    above_lowered_ceiling: Directory,
) -> None:
    d = above_lowered_ceiling
    assert d.update_principal("vic", now=NOW, clearance=Level.PUBLIC) == {
        "clearance": ["internal", "public"]
    }
    assert d.update_principal("vic", now=NOW, status=Status.ACTIVE) == {
        "status": ["disabled", "active"]
    }


def test_no_op_on_a_principal_above_a_lowered_ceiling_is_still_a_no_op(
    above_lowered_ceiling: Directory,
) -> None:
    """ "No-op returns {} and writes nothing": re-stating a disabled principal's status
    changes nothing and breaks no rule."""
    d = above_lowered_ceiling
    before = counts(d)
    assert d.update_principal("vic", now=NOW, status=Status.DISABLED) == {}
    assert counts(d) == before


def test_a_disabled_principal_above_a_lowered_ceiling_can_lose_its_role(
    above_lowered_ceiling: Directory,
) -> None:
    """Taking the vendor-manager role away from a disabled principal only removes access;
    the ceiling (which only grows more true) must not stand in the way."""
    d = above_lowered_ceiling
    assert d.update_principal("vic", now=NOW, roles=[]) == {"roles": [["vendor-manager"], []]}


# ── compare and set ────────────────────────────────────────────────────────────────────────
def test_principal_lowering_that_became_a_raise_is_refused(staffed: Directory) -> None:
    # Judged: critical → restricted, a lowering, applied at once by one admin.
    preview = staffed.update_principal("ann", now=NOW, clearance=Level.RESTRICTED, dry_run=True)
    assert preview == {"clearance": ["critical", "restricted"]}
    assert not principal_change_is_sensitive(preview)
    # Meanwhile someone lowers ann to internal: the same request is now a raise.
    sql(staffed, "UPDATE principals SET clearance = :v WHERE name = 'ann'", v=int(Level.INTERNAL))
    with nothing_written(staffed, "principals", "ann"), pytest.raises(Conflict) as raised:
        staffed.update_principal(
            "ann", now=NOW + 1, clearance=Level.RESTRICTED, forbid_sensitive=True
        )
    assert raised.value.status == 409
    assert "two admins" in str(raised.value)
    assert row(staffed, "principals", "ann")["clearance"] == int(Level.INTERNAL)
    assert event_records(staffed, "principal.updated") == []


def test_principal_compartment_removal_that_became_an_addition_is_refused(
    staffed: Directory,
) -> None:
    preview = staffed.update_principal("ann", now=NOW, compartments=["cyber"], dry_run=True)
    assert preview == {"compartments": [["bio", "cyber"], ["cyber"]]}
    assert not principal_change_is_sensitive(preview)
    sql(staffed, "UPDATE principals SET compartments = '[\"bio\"]' WHERE name = 'ann'")
    with nothing_written(staffed, "principals", "ann"), pytest.raises(Conflict):
        staffed.update_principal("ann", now=NOW + 1, compartments=["cyber"], forbid_sensitive=True)


def test_principal_role_removal_that_became_an_addition_is_refused(staffed: Directory) -> None:
    staffed.update_principal("vic", now=NOW, roles=["auditor", "approver"])
    preview = staffed.update_principal("vic", now=NOW, roles=["auditor"], dry_run=True)
    assert not principal_change_is_sensitive(preview)
    sql(staffed, "UPDATE principals SET roles = '[]' WHERE name = 'vic'")
    with nothing_written(staffed, "principals", "vic"), pytest.raises(Conflict):
        staffed.update_principal("vic", now=NOW + 1, roles=["auditor"], forbid_sensitive=True)


def test_principal_change_still_harmless_is_applied(staffed: Directory) -> None:
    sql(staffed, "UPDATE principals SET clearance = :v WHERE name = 'ann'", v=int(Level.RESTRICTED))
    changes = staffed.update_principal(
        "ann", now=NOW, clearance=Level.INTERNAL, compartments=[], forbid_sensitive=True
    )
    assert changes == {
        "clearance": ["restricted", "internal"],
        "compartments": [["bio", "cyber"], []],
    }
    assert row(staffed, "principals", "ann")["clearance"] == int(Level.INTERNAL)


def test_forbid_sensitive_refuses_a_raise_outright(staffed: Directory) -> None:
    with nothing_written(staffed, "principals", "vic"), pytest.raises(Conflict):
        staffed.update_principal("vic", now=NOW, clearance=Level.CRITICAL, forbid_sensitive=True)
    # Without it (the approved, two-person path), the same change applies.
    assert staffed.update_principal("vic", now=NOW, clearance=Level.CRITICAL) == {
        "clearance": ["internal", "critical"]
    }
