"""Rotating a key: a successor with the same principal, networks, note, canary flag and
lifetime (clipped to a vendor's contract), and the old key retired now or after a bounded
grace period — one transaction, two audit events, or nothing at all."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind, Reason, Status, VendorStatus
from garrison.errors import BadRequest, Conflict
from garrison.identity import authenticate, parse_key
from garrison.keyring import Sealer, load_pepper
from garrison.store import CreatedKey, Directory, journal, load_snapshot
from garrison.store.directory import KEY_MAX_LIFETIME_S, KEY_ROTATION_GRACE_MAX_S, NAME_MAX_CHARS
from tests.support.db import audit_rows, one, rows, sql
from tests.support.db import row_counts as counts

NOW = 1_800_000_000.0
DAY = 86400.0
HOUR = 3600.0
END = NOW + 30 * DAY


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    """``alice`` (internal) and ``vic`` of the vendor ``acme`` (contract ends at END)."""
    dr = open_directory(initialized.settings, actor="test")
    dr.create_principal(
        "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    dr.create_vendor(
        "acme",
        sponsor="alice",
        contract_start=NOW - DAY,
        contract_end=END,
        networks=["10.1.0.0/16", "2001:db8::/32"],
        seat_limit=3,
        ceiling_level=Level.INTERNAL,
        now=NOW,
    )
    dr.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    dr.create_principal(
        "vic", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    try:
        yield dr
    finally:
        dr.engine.dispose()


def key_row(d: Directory, key_id: str) -> dict[str, Any]:
    return one(d, "SELECT * FROM credentials WHERE id = :id", id=key_id)


def all_keys(d: Directory) -> list[dict[str, Any]]:
    return rows(d, "SELECT * FROM credentials ORDER BY id")


def events(d: Directory, *names: str) -> list[dict[str, Any]]:
    out = []
    for r in audit_rows(d):
        decoded = orjson.loads(r["record"])
        assert decoded["credential_id"] == r["credential_id"]
        assert decoded["request_id"] == r["request_id"]
        if not names or decoded["name"] in names:
            out.append(decoded)
    return out


@contextmanager
def refused(d: Directory, match: str, exc: type[Exception] = BadRequest) -> Iterator[None]:
    """The block raises ``exc`` matching ``match``; no row of any table changes."""
    before_counts, before_keys = counts(d), all_keys(d)
    with pytest.raises(exc, match=match):
        yield
    assert counts(d) == before_counts
    assert all_keys(d) == before_keys


def auth(initialized: Initialized, d: Directory, created: CreatedKey, address: str, now: float):
    snap = load_snapshot(d.engine, Sealer.from_dir(initialized.settings.key_dir))
    return authenticate(
        created.key.token.reveal(),
        credentials=snap.credentials,
        principals=snap.principals,
        orgs=snap.orgs,
        pepper=load_pepper(initialized.settings.key_dir),
        now=now,
        address=ipaddress.ip_address(address),
    )


# ── the successor ──────────────────────────────────────────────────────────────────────────
def test_successor_keeps_principal_networks_note_canary_and_lifetime(d: Directory) -> None:
    old = d.create_key(
        "alice",
        now=NOW,
        expires_in=10 * DAY,
        networks=["192.168.7.0/24", "10.0.0.0/8"],
        note="ci runner",
        canary=True,
    )
    at = NOW + 3 * DAY
    new = d.rotate_key(old.key.key_id, now=at)
    assert new.key.key_id != old.key.key_id
    assert new.principal_id == old.principal_id
    assert new.expires_at == at + 10 * DAY
    before, after = key_row(d, old.key.key_id), key_row(d, new.key.key_id)
    assert after["principal_id"] == before["principal_id"]
    assert after["networks"] == before["networks"] == '["10.0.0.0/8","192.168.7.0/24"]'
    assert after["note"] == "ci runner"
    assert after["canary"] == 1
    assert after["created_at"] == at
    assert after["expires_at"] == at + 10 * DAY
    assert after["revoked_at"] is None
    assert after["secret_hash"] != before["secret_hash"]


def test_successor_token_is_new_and_names_the_successor(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    new = d.rotate_key(old.key.key_id, now=NOW)
    parsed = parse_key(new.key.token.reveal())
    assert parsed is not None and parsed.key_id == new.key.key_id
    assert new.key.token.reveal() != old.key.token.reveal()


def test_successor_of_a_plain_key_is_plain(d: Directory) -> None:
    old = d.create_key("alice", now=NOW, expires_in=HOUR)
    new = d.rotate_key(old.key.key_id, now=NOW + 60)
    row = key_row(d, new.key.key_id)
    assert (row["networks"], row["note"], row["canary"]) == ("[]", "", 0)
    assert row["expires_at"] == NOW + 60 + HOUR


def test_successor_authenticates_and_an_immediately_retired_key_does_not(
    d: Directory, initialized: Initialized
) -> None:
    old = d.create_key("alice", now=NOW, networks=["10.0.0.0/8"])
    new = d.rotate_key(old.key.key_id, now=NOW + 1)
    assert auth(initialized, d, new, "10.2.3.4", NOW + 2).ok
    assert auth(initialized, d, new, "192.168.0.1", NOW + 2).reason is Reason.CREDENTIAL_NETWORK
    assert auth(initialized, d, old, "10.2.3.4", NOW + 2).reason is Reason.CREDENTIAL_REVOKED


def test_old_key_works_through_the_grace_period_only(
    d: Directory, initialized: Initialized
) -> None:
    old = d.create_key("alice", now=NOW)
    new = d.rotate_key(old.key.key_id, now=NOW, grace_s=HOUR)
    assert auth(initialized, d, old, "10.0.0.1", NOW + HOUR - 1).ok
    assert auth(initialized, d, new, "10.0.0.1", NOW + HOUR - 1).ok
    assert auth(initialized, d, old, "10.0.0.1", NOW + HOUR).reason is Reason.CREDENTIAL_EXPIRED
    assert auth(initialized, d, new, "10.0.0.1", NOW + HOUR).ok


# ── immediate versus grace ─────────────────────────────────────────────────────────────────
def test_without_grace_the_old_key_is_revoked_now(d: Directory) -> None:
    old = d.create_key("alice", now=NOW, expires_in=10 * DAY)
    d.rotate_key(old.key.key_id, now=NOW + 5)
    row = key_row(d, old.key.key_id)
    assert row["revoked_at"] == NOW + 5
    assert row["expires_at"] == NOW + 10 * DAY  # untouched


def test_with_grace_the_old_key_expires_after_it_unrevoked(d: Directory) -> None:
    old = d.create_key("alice", now=NOW, expires_in=10 * DAY)
    d.rotate_key(old.key.key_id, now=NOW + 5, grace_s=2 * HOUR)
    row = key_row(d, old.key.key_id)
    assert row["revoked_at"] is None
    assert row["expires_at"] == NOW + 5 + 2 * HOUR


def test_grace_never_extends_the_old_key(d: Directory) -> None:
    old = d.create_key("alice", now=NOW, expires_in=HOUR)
    d.rotate_key(old.key.key_id, now=NOW + HOUR - 60, grace_s=12 * HOUR)
    assert key_row(d, old.key.key_id)["expires_at"] == NOW + HOUR
    assert key_row(d, old.key.key_id)["revoked_at"] is None


def test_the_maximum_grace_is_accepted(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    d.rotate_key(old.key.key_id, now=NOW, grace_s=KEY_ROTATION_GRACE_MAX_S)
    assert key_row(d, old.key.key_id)["expires_at"] == NOW + KEY_ROTATION_GRACE_MAX_S


@pytest.mark.parametrize("grace", [-1.0, -0.001, KEY_ROTATION_GRACE_MAX_S + 0.5, 7 * DAY])
def test_grace_out_of_bounds_is_refused(d: Directory, grace: float) -> None:
    old = d.create_key("alice", now=NOW)
    with refused(d, "grace must be between 0 and 24 hours"):
        d.rotate_key(old.key.key_id, now=NOW, grace_s=grace)


def test_a_reason_too_long_is_refused(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    with refused(d, f"reason is longer than {NAME_MAX_CHARS}"):
        d.rotate_key(old.key.key_id, now=NOW, reason="x" * (NAME_MAX_CHARS + 1))


def test_a_key_in_its_grace_period_can_be_rotated_again(d: Directory) -> None:
    old = d.create_key("alice", now=NOW, expires_in=10 * DAY)
    first = d.rotate_key(old.key.key_id, now=NOW, grace_s=HOUR)
    second = d.rotate_key(old.key.key_id, now=NOW + 60, grace_s=0)
    assert first.key.key_id != second.key.key_id
    row = key_row(d, old.key.key_id)
    assert row["revoked_at"] == NOW + 60 and row["expires_at"] == NOW + HOUR
    assert key_row(d, first.key.key_id)["revoked_at"] is None


def test_a_legacy_key_without_expiry_gets_the_maximum_lifetime(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    sql(d, "UPDATE credentials SET expires_at = NULL WHERE id = :id", id=old.key.key_id)
    new = d.rotate_key(old.key.key_id, now=NOW + 10, grace_s=HOUR)
    assert new.expires_at == NOW + 10 + KEY_MAX_LIFETIME_S
    assert key_row(d, old.key.key_id)["expires_at"] == NOW + 10 + HOUR


# ── refusals ───────────────────────────────────────────────────────────────────────────────
def test_unknown_key_is_refused(d: Directory) -> None:
    with refused(d, "key 'gk_nope' does not exist"):
        d.rotate_key("gk_nope", now=NOW)


def test_revoked_key_is_refused(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    d.revoke_key(old.key.key_id, now=NOW, reason="lost")
    with refused(d, "is revoked; create a new key instead", Conflict):
        d.rotate_key(old.key.key_id, now=NOW + 1)


def test_rotated_key_without_grace_cannot_be_rotated_again(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    d.rotate_key(old.key.key_id, now=NOW)
    with refused(d, "is revoked", Conflict):
        d.rotate_key(old.key.key_id, now=NOW + 1)


@pytest.mark.parametrize("after", [0.0, 1.0, DAY])
def test_expired_key_is_refused(d: Directory, after: float) -> None:
    old = d.create_key("alice", now=NOW, expires_in=HOUR)
    with refused(d, "has expired; create a new key instead", Conflict):
        d.rotate_key(old.key.key_id, now=NOW + HOUR + after)


def test_key_past_its_grace_period_is_refused(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    d.rotate_key(old.key.key_id, now=NOW, grace_s=HOUR)
    with refused(d, "has expired", Conflict):
        d.rotate_key(old.key.key_id, now=NOW + HOUR)


def test_key_of_a_disabled_principal_is_refused_and_left_alone(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    d.set_principal_status("alice", Status.DISABLED, now=NOW)
    with refused(d, "principal 'alice' is disabled; no key can be issued"):
        d.rotate_key(old.key.key_id, now=NOW + 1, grace_s=HOUR)
    row = key_row(d, old.key.key_id)
    assert row["revoked_at"] is None and row["expires_at"] == old.expires_at


@pytest.mark.parametrize("status", [VendorStatus.SUSPENDED, VendorStatus.EXPIRED])
def test_key_of_a_vendor_that_is_not_issuing_is_refused(d: Directory, status: VendorStatus) -> None:
    old = d.create_key("vic", now=NOW)
    d.set_vendor_status("acme", status, now=NOW)
    with refused(d, f"the vendor is {status.value}: no key can be issued"):
        d.rotate_key(old.key.key_id, now=NOW + 1)


def test_vendor_key_outside_narrowed_networks_is_not_rotated(d: Directory) -> None:
    """A key whose network the vendor no longer allows is not carried forward (the terms
    are changed under it directly in the database)."""
    old = d.create_key("vic", now=NOW, networks=["2001:db8:1::/48"])
    sql(d, "UPDATE orgs SET networks = '[\"10.1.0.0/16\"]' WHERE name = 'acme'")
    with refused(d, "rule vendor-networks: 2001:db8:1::/48 is not within"):
        d.rotate_key(old.key.key_id, now=NOW + 1)


# ── vendor terms ───────────────────────────────────────────────────────────────────────────
def test_vendor_successor_is_clipped_to_the_contract_end(d: Directory) -> None:
    old = d.create_key("vic", now=NOW, expires_in=20 * DAY, networks=["10.1.2.0/24"])
    at = NOW + 15 * DAY
    new = d.rotate_key(old.key.key_id, now=at, grace_s=HOUR)
    assert new.expires_at == END  # not at + 20 days
    assert key_row(d, new.key.key_id)["expires_at"] == END
    assert key_row(d, new.key.key_id)["networks"] == '["10.1.2.0/24"]'
    assert key_row(d, old.key.key_id)["expires_at"] == at + HOUR


def test_vendor_successor_within_the_contract_is_not_clipped(d: Directory) -> None:
    old = d.create_key("vic", now=NOW, expires_in=2 * DAY)
    new = d.rotate_key(old.key.key_id, now=NOW + DAY)
    assert new.expires_at == NOW + 3 * DAY
    assert orjson.loads(key_row(d, new.key.key_id)["networks"]) == [
        "10.1.0.0/16",
        "2001:db8::/32",
    ]


def test_vendor_successor_follows_a_shortened_contract(d: Directory) -> None:
    old = d.create_key("vic", now=NOW, expires_in=20 * DAY)
    d.update_vendor("acme", now=NOW, contract_end=NOW + 5 * DAY)
    new = d.rotate_key(old.key.key_id, now=NOW + DAY)
    assert new.expires_at == NOW + 5 * DAY


def test_internal_successor_has_no_contract(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    at = END + 10 * DAY  # after acme's contract; alice is not acme's
    new = d.rotate_key(old.key.key_id, now=at)
    assert new.expires_at == at + KEY_MAX_LIFETIME_S


# ── events ─────────────────────────────────────────────────────────────────────────────────
def test_rotation_is_one_write_with_two_events(d: Directory) -> None:
    old = d.create_key("vic", now=NOW, note="laptop")
    before = counts(d)
    new = d.rotate_key(old.key.key_id, now=NOW + 7, grace_s=HOUR, reason="scheduled")
    after = counts(d)
    assert after == {
        **before,
        "credentials": before["credentials"] + 1,
        "change_feed": before["change_feed"] + 2,
        "audit_events": before["audit_events"] + 2,
    }
    created, rotated = events(d)[-2:]
    assert created["name"] == "credential.created"
    assert created["credential_id"] == new.key.key_id
    assert created["principal_id"] == new.principal_id
    assert created["data"] == {
        "expires_at": new.expires_at,
        "networks": ["10.1.0.0/16", "2001:db8::/32"],
        "note": "laptop",
        "provenance": "legacy",  # the successor keeps its predecessor's provenance
        "created_by": d.actor,
        "rotated_from": old.key.key_id,
    }
    assert rotated["name"] == "credential.rotated"
    assert rotated["credential_id"] == old.key.key_id
    assert rotated["principal_id"] == old.principal_id
    assert rotated["data"] == {
        "successor": new.key.key_id,
        "grace_s": HOUR,
        "reason": "scheduled",
    }
    for event in (created, rotated):
        assert event["actor"] == "test" and event["at"] == NOW + 7


def test_rotation_change_feed_names_both_keys(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    new = d.rotate_key(old.key.key_id, now=NOW)
    last = rows(d, "SELECT entity, entity_id, op FROM change_feed ORDER BY seq DESC LIMIT 2")
    feed = [(r["entity"], r["entity_id"], r["op"]) for r in last]
    assert sorted(feed) == sorted(
        [("credential", new.key.key_id, "create"), ("credential", old.key.key_id, "rotate")]
    )


def test_rotation_events_carry_the_origin(d: Directory, initialized: Initialized) -> None:
    origin = {"via": "admin-api", "admin": "admin", "request_id": "req_rot"}
    pepper = load_pepper(initialized.settings.key_dir)
    via_api = Directory(d.engine, actor="prn_x", pepper=pepper, sealer=d.sealer, origin=origin)
    old = d.create_key("alice", now=NOW)
    via_api.rotate_key(old.key.key_id, now=NOW, reason="leak")
    created, rotated = events(d, "credential.created", "credential.rotated")[-2:]
    for event in (created, rotated):
        assert event["data"]["origin"] == origin
        assert event["request_id"] == "req_rot"
        assert event["actor"] == "prn_x"


def test_no_events_on_refusal(d: Directory) -> None:
    old = d.create_key("alice", now=NOW)
    d.revoke_key(old.key.key_id, now=NOW, reason="x")
    n = len(events(d, "credential.created", "credential.rotated"))
    with pytest.raises(Conflict):
        d.rotate_key(old.key.key_id, now=NOW)
    assert len(events(d, "credential.created", "credential.rotated")) == n


# ── one transaction ────────────────────────────────────────────────────────────────────────
def test_a_failure_after_the_successor_is_inserted_leaves_nothing(
    d: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The successor, its event and the retirement are one transaction: if recording the
    rotation fails, no successor exists and the old key is as it was."""
    old = d.create_key("alice", now=NOW, networks=["10.0.0.0/8"])
    record = journal.record

    def failing_record(conn: Any, **kw: Any) -> None:
        if kw["payload"].NAME.value == "credential.rotated":
            raise RuntimeError("disk full")
        record(conn, **kw)

    monkeypatch.setattr(journal, "record", failing_record)
    with refused(d, "disk full", RuntimeError):
        d.rotate_key(old.key.key_id, now=NOW + 1, grace_s=HOUR)
    row = key_row(d, old.key.key_id)
    assert row["revoked_at"] is None and row["expires_at"] == old.expires_at
