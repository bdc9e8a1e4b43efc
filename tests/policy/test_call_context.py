"""Tests for ``garrison.policy.context.call_context``: every field of the decision's context,
for a caller without vendor terms and one with them, compared with a ``Context`` built by
name here; reused contexts are the same values as new ones."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from types import MappingProxyType

import pytest

from garrison.domain import (
    AuthStyle,
    Credential,
    Level,
    Model,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Status,
    UpstreamApi,
)
from garrison.domain.snapshot import Snapshot
from garrison.domain.vendor import VendorStatus, VendorTerms
from garrison.policy import context as context_module
from garrison.policy.context import (
    CONTEXT_FIELDS,
    CONTEXTS_KEPT,
    NO_PEOPLE_KEYS,
    IdentityPolicy,
    call_context,
)
from garrison.policy.engine import Context

NOW = 1_700_000_000.0
INSIDE = ipaddress.ip_address("192.0.2.10")
OUTSIDE = ipaddress.ip_address("198.51.100.7")
TERMS = VendorTerms(
    sponsor_id="p-sponsor",
    contract_start=NOW - 10,
    contract_end=NOW + 10,
    networks=(ipaddress.ip_network("192.0.2.0/24"),),
    seat_limit=5,
    ceiling_level=Level.INTERNAL,
    ceiling_compartments=frozenset({"cyber"}),
    status=VendorStatus.ACTIVE,
)
US = Org(id="o-us", name="us", kind=OrgKind.INTERNAL)
VENDOR = Org(id="o-v", name="v", kind=OrgKind.VENDOR, vendor=TERMS)
PERSON = Principal(
    id="p-1",
    name="alice",
    org_id=US.id,
    kind=PrincipalKind.HUMAN,
    clearance=Level.RESTRICTED,
    compartments=frozenset(),
    status=Status.ACTIVE,
)
CONTRACTOR = dataclasses.replace(PERSON, id="p-2", name="vic", org_id=VENDOR.id)
KEY = Credential(
    id="k-1",
    principal_id=PERSON.id,
    secret_hash=bytes(32),
    created_at=NOW - 100,
    expires_at=None,
    networks=(ipaddress.ip_network("192.0.2.0/24"),),
)
MODEL = Model(
    id="m-1",
    name="assistant",
    upstream_url="http://127.0.0.1:9/v1",
    upstream_model="up",
    api=UpstreamApi.OPENAI,
    auth_style=AuthStyle.NONE,
    level=Level.RESTRICTED,
    compartments=frozenset(),
)
SNAP = Snapshot(
    version=1,
    orgs=MappingProxyType({US.id: US, VENDOR.id: VENDOR}),
    principals=MappingProxyType({PERSON.id: PERSON, CONTRACTOR.id: CONTRACTOR}),
    credentials=MappingProxyType({KEY.id: KEY}),
    models=MappingProxyType({MODEL.name: MODEL}),
)
CLOCK = time.gmtime(NOW)


def test_context_fields_are_listed_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(Context)) == CONTEXT_FIELDS


def test_a_caller_without_vendor_terms_has_the_vendor_defaults() -> None:
    got = call_context(SNAP, PERSON, MODEL, KEY, OUTSIDE, NOW, justification=True)
    assert got == Context(
        key_network_ok=False,
        grant=False,
        mfa_capable=False,
        mfa=False,
        mfa_from_level=int(Level.RESTRICTED),
        person_key_ok=True,
        justification=True,
        hour_utc=CLOCK.tm_hour,
        weekday=CLOCK.tm_wday,
    )


@pytest.mark.parametrize(("address", "inside"), [(INSIDE, True), (OUTSIDE, False), (None, True)])
def test_a_vendor_caller_has_its_terms(address: ipaddress.IPv4Address | None, inside: bool) -> None:
    identity = IdentityPolicy(people_key_max_level=NO_PEOPLE_KEYS)
    # After the contract's end.
    got = call_context(SNAP, CONTRACTOR, MODEL, KEY, address, NOW + 20, identity=identity)
    clock = time.gmtime(NOW + 20)
    assert got == Context(
        vendor_active=True,
        vendor_in_contract=False,
        vendor_network_ok=inside,
        vendor_ceiling_level=int(Level.INTERNAL),
        vendor_ceiling_compartments=frozenset({"cyber"}),
        key_network_ok=inside,  # the key's networks are the vendor's
        grant=False,
        mfa_capable=False,
        mfa=False,
        mfa_from_level=int(Level.RESTRICTED),
        person_key_ok=False,  # a person's key above the people-key ceiling
        justification=False,
        hour_utc=clock.tm_hour,
        weekday=clock.tm_wday,
    )


def test_a_session_with_mfa_counts_and_has_no_key_network() -> None:
    got = call_context(SNAP, PERSON, MODEL, None, OUTSIDE, NOW, session_mfa=True)
    assert (got.mfa_capable, got.mfa, got.key_network_ok, got.person_key_ok) == (
        True,
        True,
        True,
        True,
    )


def test_reused_contexts_equal_new_ones_past_the_kept_count() -> None:
    context_module._contexts.clear()
    made = [
        call_context(SNAP, PERSON, MODEL, KEY, INSIDE, NOW + 3600 * n)
        for n in range(CONTEXTS_KEPT + 5)
    ]
    assert len(context_module._contexts) <= CONTEXTS_KEPT
    for n, got in enumerate(made):
        clock = time.gmtime(NOW + 3600 * n)
        assert (got.hour_utc, got.weekday) == (clock.tm_hour, clock.tm_wday)
    again = call_context(SNAP, PERSON, MODEL, KEY, INSIDE, NOW)
    assert again == made[0]
