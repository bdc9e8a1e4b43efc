"""The vendor lifecycle table and the pure checks on a vendor's terms (clock passed in)."""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.domain import (
    TRANSITIONS,
    IllegalTransition,
    Level,
    VendorStatus,
    VendorTerms,
    check_transition,
)
from garrison.errors import BadRequest

S = VendorStatus
START = 1_800_000_000.0
END = START + 30 * 86400

# The lifecycle as the issue draws it: onboarding → active ⇄ suspended → expired →
# offboarded; a contract end expires an active or suspended vendor; offboarding is possible
# from anywhere but offboarded, and nothing leaves offboarded.
DOCUMENTED = {
    S.ONBOARDING: {S.ACTIVE, S.OFFBOARDED},
    S.ACTIVE: {S.SUSPENDED, S.EXPIRED, S.OFFBOARDED},
    S.SUSPENDED: {S.ACTIVE, S.EXPIRED, S.OFFBOARDED},
    S.EXPIRED: {S.ACTIVE, S.OFFBOARDED},  # restore: a two-person change
    S.OFFBOARDED: set(),
}

ALL_PAIRS = list(itertools.product(VendorStatus, VendorStatus))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


def _id(pair: tuple[VendorStatus, VendorStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def terms(**kw: object) -> VendorTerms:
    args: dict[str, object] = dict(
        sponsor_id="prn_sponsor",
        contract_start=START,
        contract_end=END,
        networks=(ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("2001:db8::/32")),
        seat_limit=5,
        ceiling_level=Level.INTERNAL,
        ceiling_compartments=frozenset({"cyber", "bio"}),
        status=S.ACTIVE,
    )
    args.update(kw)
    return VendorTerms(**args)  # type: ignore[arg-type]


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# ── the transition table ───────────────────────────────────────────────────────────────────
def test_transition_table_is_the_documented_lifecycle() -> None:
    assert {k: set(v) for k, v in TRANSITIONS.items()} == DOCUMENTED


def test_transition_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(VendorStatus)


@pytest.mark.parametrize(("current", "target"), LEGAL, ids=[_id(p) for p in LEGAL])
def test_every_legal_transition_is_accepted(current: VendorStatus, target: VendorStatus) -> None:
    check_transition(current, target)  # raises on refusal


@pytest.mark.parametrize(("current", "target"), ILLEGAL, ids=[_id(p) for p in ILLEGAL])
def test_every_other_pair_is_refused_naming_the_allowed_targets(
    current: VendorStatus, target: VendorStatus
) -> None:
    allowed = ", ".join(sorted(s.value for s in DOCUMENTED[current])) or "none"
    expected = f"a vendor cannot go from {current.value} to {target.value} (allowed: {allowed})"
    with pytest.raises(IllegalTransition, match=re.escape(expected)):
        check_transition(current, target)


def test_legal_and_illegal_pairs_partition_all_pairs() -> None:
    assert len(LEGAL) + len(ILLEGAL) == len(VendorStatus) ** 2
    assert len(LEGAL) == sum(len(v) for v in DOCUMENTED.values())


def test_no_status_may_transition_to_itself() -> None:
    assert all((s, s) in ILLEGAL for s in VendorStatus)


def test_illegal_transition_is_a_bad_request_with_its_own_code() -> None:
    with pytest.raises(BadRequest) as info:
        check_transition(S.OFFBOARDED, S.ACTIVE)
    assert info.value.status == 400
    assert info.value.code == "illegal_transition"


# ── the contract window ────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (START - 1, False),
        (START, True),
        (START + 1, True),
        (END - 0.001, True),
        (END, False),  # the instant the contract ends, it is over
        (END + 1, False),
    ],
)
def test_in_contract_is_start_inclusive_and_end_exclusive(now: float, inside: bool) -> None:
    assert terms().in_contract(now) is inside


def test_usable_when_active_and_inside_the_contract() -> None:
    assert terms().usable(START + 10)


@pytest.mark.parametrize("status", [s for s in VendorStatus if s is not S.ACTIVE])
def test_not_usable_unless_active_even_inside_the_contract(status: VendorStatus) -> None:
    assert not terms(status=status).usable(START + 10)


@pytest.mark.parametrize("now", [START - 1, END, END + 86400])
def test_active_vendor_not_usable_outside_the_contract(now: float) -> None:
    assert not terms().usable(now)


def test_vendor_without_a_contract_is_never_usable() -> None:
    empty = terms(contract_start=0.0, contract_end=0.0)
    assert not empty.usable(0.0) and not empty.usable(START)


# ── addresses and networks ─────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.0.0", True),
        ("10.1.255.255", True),
        ("10.2.0.1", False),
        ("127.0.0.1", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.1.0.1", False),  # an IPv4-mapped v6 address is not a v4 address
    ],
)
def test_allows_address_only_inside_the_vendor_networks(address: str, allowed: bool) -> None:
    assert terms().allows_address(addr(address)) is allowed


def test_vendor_without_networks_allows_no_address() -> None:
    assert not terms(networks=()).allows_address(addr("10.1.0.1"))


@pytest.mark.parametrize(
    "inner", ["10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "2001:db8::/32", "2001:db8:1::/48"]
)
def test_covers_networks_inside_its_own(inner: str) -> None:
    assert terms().covers_network(net(inner))


@pytest.mark.parametrize(
    "outer", ["10.0.0.0/8", "0.0.0.0/0", "10.2.0.0/16", "2001:db8::/31", "::/0", "2001:db9::/48"]
)
def test_does_not_cover_wider_or_disjoint_networks(outer: str) -> None:
    assert not terms().covers_network(net(outer))


@pytest.mark.parametrize("v6", ["::/0", "::ffff:0:0/96", "::ffff:10.1.0.0/112", "::a01:0/112"])
def test_a_v6_network_is_never_inside_a_v4_one(v6: str) -> None:
    v4_only = terms(networks=(net("0.0.0.0/0"),))
    assert not v4_only.covers_network(net(v6))


@pytest.mark.parametrize("v4", ["0.0.0.0/0", "10.1.0.0/16", "0.0.0.0/32"])
def test_a_v4_network_is_never_inside_a_v6_one(v4: str) -> None:
    v6_only = terms(networks=(net("::/0"),))
    assert not v6_only.covers_network(net(v4))


def test_covers_network_inside_any_one_of_several() -> None:
    several = terms(networks=(net("10.1.0.0/16"), net("192.168.5.0/24")))
    assert several.covers_network(net("192.168.5.128/25"))
    assert not several.covers_network(net("192.168.4.0/23"))  # spans outside both


@given(
    prefix=st.integers(min_value=0, max_value=32),
    raw=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_a_covered_network_only_holds_allowed_addresses(prefix: int, raw: int) -> None:
    candidate = ipaddress.ip_network((raw, prefix), strict=False)
    t = terms()
    if t.covers_network(candidate):
        assert t.allows_address(candidate.network_address)
        assert t.allows_address(candidate.broadcast_address)


# ── the ceiling ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("level", "allowed"),
    [
        (Level.PUBLIC, True),
        (Level.INTERNAL, True),
        (Level.RESTRICTED, False),
        (Level.CRITICAL, False),
    ],
)
def test_ceiling_allows_levels_up_to_its_own(level: Level, allowed: bool) -> None:
    assert terms().ceiling_allows(level, frozenset()) is allowed


@pytest.mark.parametrize(
    ("compartments", "allowed"),
    [
        (set(), True),
        ({"cyber"}, True),
        ({"cyber", "bio"}, True),
        ({"finance"}, False),
        ({"cyber", "finance"}, False),
    ],
)
def test_ceiling_allows_only_its_compartments(compartments: set[str], allowed: bool) -> None:
    assert terms().ceiling_allows(Level.INTERNAL, frozenset(compartments)) is allowed


def test_ceiling_refuses_a_higher_level_even_with_allowed_compartments() -> None:
    assert not terms().ceiling_allows(Level.RESTRICTED, frozenset({"cyber"}))


def test_terms_are_frozen() -> None:
    t = terms()
    with pytest.raises(AttributeError):
        t.seat_limit = 99  # type: ignore[misc]
    assert replace(t, seat_limit=99).seat_limit == 99 and t.seat_limit == 5
