"""Tests for ``garrison.domain.standing``: the one home of the key/person/vendor rules, and
the order a refusal names them in (the same wherever standing is judged)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from garrison.domain import (
    Credential,
    Level,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Reason,
    Status,
    VendorStatus,
    VendorTerms,
)
from garrison.domain.standing import key_network_ok, standing_refusal, vendor_refusal

NOW = 1_700_000_000.0
INSIDE = ipaddress.ip_address("198.51.100.7")
OUTSIDE = ipaddress.ip_address("203.0.113.9")
NET = ipaddress.ip_network("198.51.100.0/24")

TERMS = VendorTerms(
    sponsor_id="p-sponsor",
    contract_start=NOW - 86_400,
    contract_end=NOW + 86_400,
    networks=(NET,),
    seat_limit=5,
    ceiling_level=Level.RESTRICTED,
    ceiling_compartments=frozenset(),
    status=VendorStatus.ACTIVE,
)
VENDOR = Org(id="o-v", name="acme", kind=OrgKind.VENDOR, vendor=TERMS)
PERSON = Principal(
    id="p-1",
    name="bob",
    org_id=VENDOR.id,
    kind=PrincipalKind.HUMAN,
    clearance=Level.RESTRICTED,
    compartments=frozenset(),
    status=Status.ACTIVE,
)
KEY = Credential(
    id="k-1",
    principal_id=PERSON.id,
    secret_hash=bytes(32),
    created_at=NOW - 60,
    expires_at=NOW + 3600,
    networks=(NET,),
)


def refusal(
    credential: Credential | None = KEY,
    principal: Principal | None = PERSON,
    org: Org | None = VENDOR,
    now: float = NOW,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = INSIDE,
) -> Reason | None:
    return standing_refusal(
        credential=credential, principal=principal, org=org, now=now, address=address
    )


def test_a_key_in_good_standing_is_not_refused() -> None:
    assert refusal() is None
    assert refusal(credential=None) is None  # a sign-in token's caller


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"credential": replace(KEY, revoked=True)}, Reason.CREDENTIAL_REVOKED),
        ({"principal": replace(PERSON, status=Status.DISABLED)}, Reason.PRINCIPAL_INACTIVE),
        ({"principal": None}, Reason.PRINCIPAL_INACTIVE),
        (
            {"org": replace(VENDOR, vendor=replace(TERMS, status=VendorStatus.SUSPENDED))},
            Reason.VENDOR_INACTIVE,
        ),
        ({"now": TERMS.contract_end}, Reason.VENDOR_CONTRACT),  # the instant it ends
        ({"address": OUTSIDE}, Reason.VENDOR_NETWORK),
        ({"credential": replace(KEY, expires_at=NOW)}, Reason.CREDENTIAL_EXPIRED),
        (
            {"credential": replace(KEY, networks=(ipaddress.ip_network("198.51.100.128/28"),))},
            Reason.CREDENTIAL_NETWORK,
        ),
    ],
)
def test_each_rule_refuses_with_its_reason(change: dict[str, object], reason: Reason) -> None:
    assert refusal(**change) is reason  # type: ignore[arg-type]


def test_the_order_revoked_then_person_then_vendor_then_key_expiry_and_network() -> None:
    everything = {
        "credential": replace(KEY, revoked=True, expires_at=NOW, networks=()),
        "principal": replace(PERSON, status=Status.DISABLED),
        "org": replace(VENDOR, vendor=replace(TERMS, status=VendorStatus.SUSPENDED)),
        "address": OUTSIDE,
    }
    order = [
        Reason.CREDENTIAL_REVOKED,
        Reason.PRINCIPAL_INACTIVE,
        Reason.VENDOR_INACTIVE,
        Reason.CREDENTIAL_EXPIRED,
    ]
    for expected in order:
        assert refusal(**everything) is expected  # type: ignore[arg-type]
        # Mend the first cause: the next one shows.
        if expected is Reason.CREDENTIAL_REVOKED:
            everything["credential"] = replace(KEY, expires_at=NOW)
        elif expected is Reason.PRINCIPAL_INACTIVE:
            everything["principal"] = PERSON
        elif expected is Reason.VENDOR_INACTIVE:
            everything["org"] = VENDOR
            everything["address"] = INSIDE


def test_a_vendor_reason_comes_before_the_key_s_own() -> None:
    """A key is clipped to its vendor's terms: the vendor reason explains the refusal."""
    assert refusal(address=OUTSIDE) is Reason.VENDOR_NETWORK  # outside both
    assert refusal(now=TERMS.contract_end, credential=replace(KEY, expires_at=NOW)) is (
        Reason.VENDOR_CONTRACT
    )


def test_no_address_skips_only_the_network_rules() -> None:
    """A live call (its address checked when it began) is still cut for everything else."""
    assert refusal(address=None) is None
    assert refusal(address=None, now=TERMS.contract_end) is Reason.VENDOR_CONTRACT
    assert vendor_refusal(TERMS, NOW, None) is None
    assert vendor_refusal(TERMS, NOW, OUTSIDE) is Reason.VENDOR_NETWORK
    assert key_network_ok(KEY, None) and not key_network_ok(KEY, OUTSIDE)


def test_a_person_of_no_vendor_has_no_vendor_terms() -> None:
    internal = Org(id="o-i", name="us", kind=OrgKind.INTERNAL)
    assert refusal(org=internal, credential=replace(KEY, networks=())) is None
    assert refusal(org=None, credential=replace(KEY, networks=()), address=OUTSIDE) is None
    assert vendor_refusal(None, NOW, OUTSIDE) is None
