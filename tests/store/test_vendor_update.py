"""Changing a vendor's terms: narrowing refused while something is in the way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind, Status, VendorStatus
from garrison.errors import BadRequest
from garrison.store import Directory
from tests.support.db import one, row_counts

NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    directory = open_directory(initialized.settings, actor="test")
    directory.create_vendor(
        "acme",
        sponsor="admin",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.1.0.0/16", "10.2.0.0/16"],
        seat_limit=3,
        ceiling_level=Level.RESTRICTED,
        ceiling_compartments=["cyber"],
        now=NOW,
    )
    directory.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    directory.create_principal(
        "vic",
        org="acme",
        kind=PrincipalKind.HUMAN,
        clearance=Level.RESTRICTED,
        compartments=["cyber"],
        now=NOW,
    )
    directory.create_principal(
        "wes", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    try:
        yield directory
    finally:
        directory.engine.dispose()


def _audit_count(d: Directory) -> int:
    return row_counts(d)["audit_events"]


def test_shrinking_networks_under_a_live_key_is_refused_naming_it(d: Directory) -> None:
    key = d.create_key("vic", now=NOW, networks=["10.2.3.0/24"])
    before = _audit_count(d)
    with pytest.raises(BadRequest, match=key.key.key_id):
        d.update_vendor("acme", now=NOW, networks=["10.1.0.0/16"])
    assert _audit_count(d) == before


def test_lowering_the_ceiling_below_a_principal_is_refused_naming_them(d: Directory) -> None:
    with pytest.raises(BadRequest, match="vic"):
        d.update_vendor("acme", now=NOW, ceiling_level=Level.INTERNAL)
    with pytest.raises(BadRequest, match="vic"):
        d.update_vendor("acme", now=NOW, ceiling_compartments=[])


def test_lowering_the_ceiling_works_once_nobody_is_above_it(d: Directory) -> None:
    d.set_principal_status("vic", Status.DISABLED, now=NOW)
    changes = d.update_vendor(
        "acme", now=NOW, ceiling_level=Level.INTERNAL, ceiling_compartments=[]
    )
    assert changes["ceiling_level"] == int(Level.INTERNAL)


def test_seat_limit_below_active_principals_is_refused(d: Directory) -> None:
    with pytest.raises(BadRequest, match="rule vendor-seats"):
        d.update_vendor("acme", now=NOW, seat_limit=1)
    assert d.update_vendor("acme", now=NOW, seat_limit=2)["seat_limit"] == 2


def test_shortening_the_contract_clips_live_keys(d: Directory) -> None:
    key = d.create_key("wes", now=NOW, expires_in=20 * DAY)
    d.update_vendor("acme", now=NOW, contract_end=NOW + 5 * DAY)
    stored = one(d, "SELECT expires_at FROM credentials WHERE id = :id", id=key.key.key_id)
    assert stored["expires_at"] == NOW + 5 * DAY


@pytest.mark.parametrize("end", [NOW - 2 * DAY, NOW - 1])
def test_contract_end_in_the_past_or_before_start_is_refused(d: Directory, end: float) -> None:
    with pytest.raises(BadRequest):
        d.update_vendor("acme", now=NOW, contract_end=end)


def test_an_update_with_nothing_to_change_is_refused(d: Directory) -> None:
    with pytest.raises(BadRequest, match="nothing to change"):
        d.update_vendor("acme", now=NOW)


def test_an_update_is_an_audit_event_with_the_changes(d: Directory) -> None:
    before = _audit_count(d)
    d.update_vendor("acme", now=NOW, agreement_ref="MSA-2")
    assert _audit_count(d) == before + 1
