"""The vendor rules, through ``Directory``: each refusal is a ``BadRequest`` naming the rule
and writes nothing (no row, no change-feed entry, no audit event)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, OrgKind, PrincipalKind, Status, VendorStatus
from garrison.domain.networks import parse_network
from garrison.errors import BadRequest, Conflict
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot, vendors
from garrison.store.directory import KEY_MAX_LIFETIME_S
from garrison.store.vendors import SEAT_LIMIT_MAX, expire_ended_contracts
from tests.support.db import events, row_counts

NOW = 1_800_000_000.0
DAY = 86400.0
END = NOW + 30 * DAY
VENDOR_NETS = ["10.1.0.0/16", "2001:db8::/32"]
TABLES = ("audit_events", "change_feed", "orgs", "principals", "credentials")


@pytest.fixture
def directory(initialized: Initialized) -> Iterator[Directory]:
    d = open_directory(initialized.settings, actor="test")
    d.create_principal(
        "sam", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.RESTRICTED, now=NOW
    )
    add_vendor(d, "acme")
    d.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    try:
        yield d
    finally:
        d.engine.dispose()


@pytest.fixture
def key_dir(initialized: Initialized) -> Path:
    return initialized.settings.key_dir


@pytest.fixture
def contract_clock(initialized: Initialized, directory: Directory) -> Directory:
    """Writes as the gateway's contract clock does (same engine, its own actor)."""
    return open_directory(initialized.settings, engine=directory.engine, actor="contract-clock")


def add_vendor(d: Directory, name: str, **kw: Any) -> str:
    terms: dict[str, Any] = dict(
        sponsor="sam",
        contract_start=NOW - DAY,
        contract_end=END,
        networks=VENDOR_NETS,
        seat_limit=2,
        ceiling_level=Level.INTERNAL,
        ceiling_compartments=["cyber"],
        now=NOW,
    )
    terms.update(kw)
    return d.create_vendor(name, **terms)


def person(d: Directory, name: str, org: str = "acme", **kw: Any) -> str:
    args: dict[str, Any] = dict(org=org, kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL)
    args.update(kw)
    args.setdefault("now", NOW)
    return d.create_principal(name, **args)


def counts(d: Directory) -> dict[str, int]:
    every = row_counts(d)
    return {t: every[t] for t in TABLES}


def rows(d: Directory, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` as tuples; ``?`` placeholders, on either backend."""
    names = iter(range(len(params)))
    text = re.sub(r"\?", lambda _: f":p{next(names)}", sql)
    with d.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.text(text), {f"p{i}": v for i, v in enumerate(params)})
        ]


@contextmanager
def refused(d: Directory, match: str, exc: type[Exception] = BadRequest) -> Iterator[None]:
    """The block raises ``exc`` matching ``match`` and leaves every table as it was."""
    before = counts(d)
    with pytest.raises(exc, match=match):
        yield
    assert counts(d) == before


# ── people: the ceiling, the seats, the roles ──────────────────────────────────────────────
def test_clearance_above_the_ceiling_is_refused(directory: Directory) -> None:
    with refused(directory, "rule vendor-ceiling: clearance restricted"):
        person(directory, "bob", clearance=Level.RESTRICTED)


def test_compartment_outside_the_ceiling_is_refused(directory: Directory) -> None:
    with refused(directory, r"rule vendor-ceiling: .*\['finance'\]"):
        person(directory, "bob", compartments=["finance"])


def test_clearance_and_compartments_at_the_ceiling_are_accepted(directory: Directory) -> None:
    person(directory, "bob", clearance=Level.INTERNAL, compartments=["cyber"])
    assert rows(directory, "SELECT status FROM principals WHERE name = 'bob'") == [("active",)]


def test_adding_a_principal_when_seats_are_full_is_refused(directory: Directory) -> None:
    person(directory, "bob")
    person(directory, "bea")
    with refused(directory, "rule vendor-seats: the vendor has 2 active principal"):
        person(directory, "ben")


def test_disabling_a_principal_frees_its_seat(directory: Directory) -> None:
    person(directory, "bob")
    person(directory, "bea")
    directory.set_principal_status("bob", Status.DISABLED, now=NOW)
    person(directory, "ben")
    assert rows(
        directory,
        "SELECT count(*) FROM principals WHERE status = 'active' AND "
        "org_id = (SELECT id FROM orgs WHERE name = 'acme')",
    ) == [(2,)]


def test_re_enabling_a_disabled_principal_when_seats_are_full_is_refused(
    directory: Directory,
) -> None:
    person(directory, "bob")
    person(directory, "bea")
    directory.set_principal_status("bob", Status.DISABLED, now=NOW)
    person(directory, "ben")
    with refused(directory, "rule vendor-seats"):
        directory.set_principal_status("bob", Status.ACTIVE, now=NOW)
    assert rows(directory, "SELECT status FROM principals WHERE name = 'bob'") == [("disabled",)]


def test_re_enabling_a_principal_with_a_free_seat_is_accepted(directory: Directory) -> None:
    person(directory, "bob")
    directory.set_principal_status("bob", Status.DISABLED, now=NOW)
    directory.set_principal_status("bob", Status.ACTIVE, now=NOW)
    assert rows(directory, "SELECT status FROM principals WHERE name = 'bob'") == [("active",)]


def test_vendor_principal_with_a_non_vendor_role_is_refused(directory: Directory) -> None:
    with refused(directory, "may hold only the vendor-manager role .*security-admin"):
        person(directory, "bob", roles=["security-admin"])


def test_vendor_principal_may_be_a_vendor_manager(directory: Directory) -> None:
    person(directory, "bob", roles=["vendor-manager"])
    assert rows(directory, "SELECT roles FROM principals WHERE name = 'bob'") == [
        ('["vendor-manager"]',)
    ]


@pytest.mark.parametrize("org", ["acme", "internal"])
def test_unknown_role_is_refused(directory: Directory, org: str) -> None:
    with refused(directory, r"unknown role\(s\) overlord \(known: approver, auditor"):
        person(directory, "zed", org=org, roles=["overlord"])


def test_nobody_is_added_to_a_suspended_vendor(directory: Directory) -> None:
    directory.set_vendor_status("acme", VendorStatus.SUSPENDED, now=NOW)
    with refused(directory, "the vendor is suspended: no one can be added"):
        person(directory, "bob")


# ── keys: networks, lifetime, status ───────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "network", ["10.2.0.0/16", "10.0.0.0/8", "0.0.0.0/0", "2001:db9::/32", "::ffff:10.2.0.0/112"]
)
def test_key_network_outside_the_vendors_is_refused(directory: Directory, network: str) -> None:
    person(directory, "bob")
    shown = re.escape(str(parse_network(network)))
    with refused(directory, f"rule vendor-networks: {shown} is not within"):
        directory.create_key("bob", now=NOW, networks=[network])


def test_key_network_inside_the_vendors_is_kept(directory: Directory, key_dir: Path) -> None:
    person(directory, "bob")
    created = directory.create_key("bob", now=NOW, networks=["10.1.2.0/24", "2001:db8:5::/48"])
    snap = load_snapshot(directory.engine, Sealer.from_dir(key_dir))
    nets = sorted(str(n) for n in snap.credentials[created.key.key_id].networks)
    assert nets == ["10.1.2.0/24", "2001:db8:5::/48"]


def test_key_network_in_mapped_form_is_kept_as_the_ipv4_network_it_means(
    directory: Directory, key_dir: Path
) -> None:
    person(directory, "bob")
    created = directory.create_key("bob", now=NOW, networks=["::ffff:10.1.0.0/112"])
    snap = load_snapshot(directory.engine, Sealer.from_dir(key_dir))
    assert [str(n) for n in snap.credentials[created.key.key_id].networks] == ["10.1.0.0/16"]


def test_key_without_networks_gets_the_vendors(directory: Directory, key_dir: Path) -> None:
    person(directory, "bob")
    created = directory.create_key("bob", now=NOW)
    snap = load_snapshot(directory.engine, Sealer.from_dir(key_dir))
    nets = sorted(str(n) for n in snap.credentials[created.key.key_id].networks)
    assert nets == sorted(VENDOR_NETS)


def test_key_expiry_is_clipped_to_the_contract_end(directory: Directory) -> None:
    person(directory, "bob")
    created = directory.create_key("bob", now=NOW, expires_in=KEY_MAX_LIFETIME_S)
    assert created.expires_at == END
    stored = rows(directory, "SELECT expires_at FROM credentials WHERE id = ?", created.key.key_id)
    assert stored == [(END,)]


def test_key_ending_before_the_contract_is_not_clipped(directory: Directory) -> None:
    person(directory, "bob")
    created = directory.create_key("bob", now=NOW, expires_in=DAY)
    assert created.expires_at == NOW + DAY


def test_no_key_once_the_contract_has_ended(directory: Directory) -> None:
    person(directory, "bob")
    with refused(directory, "rule vendor-contract: the vendor's contract has ended"):
        directory.create_key("bob", now=END)


@pytest.mark.parametrize("status", [VendorStatus.SUSPENDED, VendorStatus.EXPIRED])
def test_no_key_for_a_vendor_that_is_not_issuing(
    directory: Directory, status: VendorStatus
) -> None:
    person(directory, "bob")
    directory.set_vendor_status("acme", status, now=NOW)
    with refused(directory, f"the vendor is {status.value}: no key can be issued"):
        directory.create_key("bob", now=NOW)


def test_no_key_for_an_offboarded_vendor(directory: Directory) -> None:
    person(directory, "bob")
    directory.set_vendor_status("acme", VendorStatus.OFFBOARDED, now=NOW)
    with refused(directory, "principal 'bob' is disabled; no key can be issued"):
        directory.create_key("bob", now=NOW)


def test_offboarded_vendor_principal_cannot_be_re_enabled(directory: Directory) -> None:
    person(directory, "bob")
    directory.set_vendor_status("acme", VendorStatus.OFFBOARDED, now=NOW)
    with refused(directory, "the vendor is offboarded: no one can be added or enabled"):
        directory.set_principal_status("bob", Status.ACTIVE, now=NOW)


# ── the vendor's own terms ─────────────────────────────────────────────────────────────────
def test_sponsor_must_be_internal(directory: Directory) -> None:
    person(directory, "bob")
    with refused(directory, "the sponsor must be an active principal of the internal org"):
        add_vendor(directory, "globex", sponsor="bob")


def test_unknown_sponsor_is_refused(directory: Directory) -> None:
    with refused(directory, "sponsor 'ghost' does not exist"):
        add_vendor(directory, "globex", sponsor="ghost")


def test_disabled_sponsor_is_refused(directory: Directory) -> None:
    directory.set_principal_status("sam", Status.DISABLED, now=NOW)
    with refused(directory, "the sponsor must be an active principal of the internal org"):
        add_vendor(directory, "globex")


@pytest.mark.parametrize("end", [NOW - 2 * DAY, NOW - DAY])
def test_contract_ending_before_or_at_its_start_is_refused(
    directory: Directory, end: float
) -> None:
    with refused(directory, "the contract must end after it starts"):
        add_vendor(directory, "globex", contract_start=NOW - DAY, contract_end=end)


def test_contract_ending_in_the_past_is_refused(directory: Directory) -> None:
    with refused(directory, "the contract end is in the past"):
        add_vendor(directory, "globex", contract_start=NOW - 10 * DAY, contract_end=NOW - 1)


def test_vendor_without_networks_is_refused(directory: Directory) -> None:
    with refused(directory, "a vendor needs at least one allowed network"):
        add_vendor(directory, "globex", networks=[])


def test_vendor_with_an_invalid_network_is_refused(directory: Directory) -> None:
    with refused(directory, "invalid network '10.0.0.1/8'"):
        add_vendor(directory, "globex", networks=["10.0.0.1/8"])


@pytest.mark.parametrize("seats", [0, -1, SEAT_LIMIT_MAX + 1])
def test_seat_limit_out_of_range_is_refused(directory: Directory, seats: int) -> None:
    with refused(directory, f"seat limit must be between 1 and {SEAT_LIMIT_MAX}"):
        add_vendor(directory, "globex", seat_limit=seats)


def test_seat_limit_at_the_maximum_is_accepted(directory: Directory) -> None:
    add_vendor(directory, "globex", seat_limit=SEAT_LIMIT_MAX)
    assert rows(directory, "SELECT seat_limit FROM orgs WHERE name = 'globex'") == [
        (SEAT_LIMIT_MAX,)
    ]


def test_duplicate_vendor_name_is_a_conflict(directory: Directory) -> None:
    with refused(directory, "org 'acme' already exists", Conflict):
        add_vendor(directory, "acme")


def test_create_org_refuses_a_vendor(directory: Directory) -> None:
    with refused(directory, "a vendor needs its terms"):
        directory.create_org("globex", OrgKind.VENDOR, now=NOW)


def test_new_vendor_starts_onboarding_and_is_audited(directory: Directory) -> None:
    before = counts(directory)
    add_vendor(directory, "globex")
    after = counts(directory)
    assert rows(directory, "SELECT status FROM orgs WHERE name = 'globex'") == [("onboarding",)]
    assert after["audit_events"] == before["audit_events"] + 1
    assert after["change_feed"] == before["change_feed"] + 1
    (event,) = [e for e in events(directory, "org.created") if e["data"]["name"] == "globex"]
    assert event["actor"] == "test" and event["data"]["kind"] == "vendor"


# ── status changes ─────────────────────────────────────────────────────────────────────────
def test_illegal_vendor_transition_is_refused_naming_what_is_allowed(
    directory: Directory,
) -> None:
    with refused(directory, r"from active to onboarding \(allowed: expired, offboarded"):
        directory.set_vendor_status("acme", VendorStatus.ONBOARDING, now=NOW)


def test_status_change_on_the_internal_org_is_refused(directory: Directory) -> None:
    with refused(directory, "'internal' is not a vendor"):
        directory.set_vendor_status("internal", VendorStatus.SUSPENDED, now=NOW)


def test_activation_after_the_contract_end_is_refused(directory: Directory) -> None:
    directory.set_vendor_status("acme", VendorStatus.SUSPENDED, now=NOW)
    with refused(directory, "rule vendor-contract: the contract has ended"):
        directory.set_vendor_status("acme", VendorStatus.ACTIVE, now=END)


def test_first_activation_after_the_contract_end_is_refused(directory: Directory) -> None:
    add_vendor(directory, "globex")
    with refused(directory, "rule vendor-contract: the contract has ended"):
        directory.set_vendor_status("globex", VendorStatus.ACTIVE, now=END + 1)


def test_offboarding_revokes_every_key_and_disables_everyone_in_one_write(
    directory: Directory,
) -> None:
    person(directory, "bob")
    person(directory, "bea")
    k1 = directory.create_key("bob", now=NOW).key.key_id
    k2 = directory.create_key("bob", now=NOW).key.key_id
    k3 = directory.create_key("bea", now=NOW).key.key_id
    directory.revoke_key(k3, now=NOW - 5, reason="lost")
    before = counts(directory)
    directory.set_vendor_status("acme", VendorStatus.OFFBOARDED, now=NOW + 10, reason="ended")
    after = counts(directory)
    assert after["audit_events"] == before["audit_events"] + 1
    assert after["change_feed"] == before["change_feed"] + 1
    revoked = dict(rows(directory, "SELECT id, revoked_at FROM credentials"))
    assert (revoked[k1], revoked[k2], revoked[k3]) == (NOW + 10, NOW + 10, NOW - 5)
    statuses = rows(
        directory,
        "SELECT p.status FROM principals p JOIN orgs o ON o.id = p.org_id WHERE o.name = 'acme'",
    )
    assert statuses == [("disabled",), ("disabled",)]
    (event,) = events(directory, "vendor.offboarded")
    assert event["data"]["keys_revoked"] == 2 and event["data"]["principals_disabled"] == 2
    assert event["data"]["reason"] == "ended" and event["actor"] == "test"


def test_offboarding_leaves_other_orgs_alone(directory: Directory) -> None:
    person(directory, "bob")
    admin_keys = rows(directory, "SELECT id FROM credentials WHERE revoked_at IS NULL")
    directory.set_vendor_status("acme", VendorStatus.OFFBOARDED, now=NOW)
    still = rows(directory, "SELECT id FROM credentials WHERE revoked_at IS NULL")
    assert still == admin_keys
    assert rows(directory, "SELECT status FROM principals WHERE name = 'sam'") == [("active",)]


# ── the contract clock ─────────────────────────────────────────────────────────────────────
def test_expire_ended_contracts_moves_only_ended_active_or_suspended_vendors(
    directory: Directory, contract_clock: Directory
) -> None:
    early = NOW - 20 * DAY  # created then, with contracts that have ended by NOW
    for name in ("ended-active", "ended-suspended", "ended-onboarding", "ended-offboarded"):
        add_vendor(directory, name, contract_start=early, contract_end=NOW - DAY, now=early)
    for name in ("ended-active", "ended-suspended"):
        directory.set_vendor_status(name, VendorStatus.ACTIVE, now=early)
    directory.set_vendor_status("ended-suspended", VendorStatus.SUSPENDED, now=early)
    directory.set_vendor_status("ended-offboarded", VendorStatus.OFFBOARDED, now=early)
    add_vendor(directory, "running-suspended")
    directory.set_vendor_status("running-suspended", VendorStatus.ACTIVE, now=NOW)
    directory.set_vendor_status("running-suspended", VendorStatus.SUSPENDED, now=NOW)

    due = expire_ended_contracts(contract_clock, NOW)

    assert sorted(due) == ["ended-active", "ended-suspended"]
    status = dict(rows(directory, "SELECT name, status FROM orgs WHERE kind = 'vendor'"))
    assert status == {
        "acme": "active",
        "ended-active": "expired",
        "ended-suspended": "expired",
        "ended-onboarding": "onboarding",
        "ended-offboarded": "offboarded",
        "running-suspended": "suspended",
    }


def test_expire_ended_contracts_records_vendor_expired_by_the_contract_clock(
    directory: Directory, contract_clock: Directory
) -> None:
    early = NOW - 20 * DAY
    add_vendor(directory, "old", contract_start=early, contract_end=NOW - DAY, now=early)
    directory.set_vendor_status("old", VendorStatus.ACTIVE, now=early)
    expire_ended_contracts(contract_clock, NOW)
    (event,) = events(directory, "vendor.expired")
    assert event["actor"] == "contract-clock"
    assert event["at"] == NOW
    assert (event["data"]["name"], event["data"]["from"], event["data"]["to"]) == (
        "old",
        "active",
        "expired",
    )


def test_expire_ended_contracts_at_the_exact_end_expires(directory: Directory) -> None:
    assert expire_ended_contracts(directory, END) == ["acme"]


def test_expire_ended_contracts_is_idempotent(directory: Directory) -> None:
    expire_ended_contracts(directory, END)
    before = counts(directory)
    assert expire_ended_contracts(directory, END + DAY) == []
    assert counts(directory) == before


def test_expire_ended_contracts_before_the_end_does_nothing(directory: Directory) -> None:
    before = counts(directory)
    assert expire_ended_contracts(directory, END - 1) == []
    assert counts(directory) == before


# ── rules under concurrent writers ─────────────────────────────────────────────────────────
def test_two_concurrent_additions_cannot_overfill_the_seats(
    directory: Directory, initialized: Initialized, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins add the last seat at once: one is refused, never both accepted.

    Each writer pauses just after counting the seats until the other has counted too (or a
    second has passed). If the count is taken inside the write transaction, the second
    writer cannot count until the first commits, and then sees the seat taken."""
    person(directory, "bob")  # 1 of 2 seats
    gate = threading.Barrier(2, timeout=1.0)
    count = vendors._active_seats

    def counted_then_wait(conn: Any, org_id: str) -> int:
        seats = count(conn, org_id)
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait()
        return seats

    monkeypatch.setattr(vendors, "_active_seats", counted_then_wait)
    errors: list[Exception] = []

    def add(name: str) -> None:
        d = open_directory(initialized.settings, actor=name)
        try:
            person(d, name)
        except BadRequest as exc:
            errors.append(exc)
        finally:
            d.engine.dispose()

    threads = [threading.Thread(target=add, args=(n,)) for n in ("bea", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    active = rows(
        directory,
        "SELECT count(*) FROM principals p JOIN orgs o ON o.id = p.org_id "
        "WHERE o.name = 'acme' AND p.status = 'active'",
    )
    assert active == [(2,)]
    assert len(errors) == 1 and "rule vendor-seats" in str(errors[0])


def test_a_key_issued_while_offboarding_does_not_survive_it(
    directory: Directory, initialized: Initialized, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key being issued as the vendor is offboarded: either it is refused or offboarding
    revokes it; an unrevoked key of an offboarded vendor must never remain.

    The key writer pauses after checking the vendor's terms until the offboarding has
    finished (or a second has passed)."""
    person(directory, "bob")
    checked, offboarded = threading.Event(), threading.Event()
    terms_check = vendors.key_terms

    def checked_then_wait(*args: Any) -> Any:
        result = terms_check(*args)
        checked.set()
        offboarded.wait(timeout=1.0)
        return result

    monkeypatch.setattr(vendors, "key_terms", checked_then_wait)

    def issue() -> None:
        d = open_directory(initialized.settings, actor="issuer")
        try:
            d.create_key("bob", now=NOW)
        except BadRequest:
            pass
        finally:
            d.engine.dispose()

    def offboard() -> None:
        d = open_directory(initialized.settings, actor="offboarder")
        try:
            d.set_vendor_status("acme", VendorStatus.OFFBOARDED, now=NOW)
        finally:
            d.engine.dispose()
            offboarded.set()

    issuer = threading.Thread(target=issue)
    issuer.start()
    assert checked.wait(timeout=5)
    offboarder = threading.Thread(target=offboard)
    offboarder.start()
    issuer.join(timeout=15)
    offboarder.join(timeout=15)
    assert rows(directory, "SELECT status FROM orgs WHERE name = 'acme'") == [("offboarded",)]
    live = rows(
        directory,
        "SELECT c.id FROM credentials c JOIN principals p ON p.id = c.principal_id "
        "WHERE p.name = 'bob' AND c.revoked_at IS NULL",
    )
    assert live == []
