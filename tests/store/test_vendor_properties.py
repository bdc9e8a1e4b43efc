"""Property: no sequence of admin calls breaks a vendor's terms.

Random sequences of directory writes (people with random clearances, keys with random
networks and lifetimes, disable / enable, vendor status changes, the clock moving past the
contract end and the contract clock running) are applied to a fresh directory. Each call is
checked against a small oracle (refused exactly when a rule says so, with ``BadRequest`` or
``Conflict``), and after every step the snapshot the data plane would load must satisfy:

* no active vendor principal above the vendor's ceiling;
* no unrevoked key of a vendor principal with a network outside the vendor's networks;
* no unrevoked key of a vendor principal living past the contract end;
* no vendor with more active principals than its seat limit;
* an offboarded vendor has no active principal and no unrevoked key.

SQLite only: each example needs a fresh directory and hypothesis runs many (a PostgreSQL
database per example would multiply the time); the rules it exercises run on both backends
in test_vendor_rules.py and test_principal_update.py, concurrency included.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garrison.bootstrap import init, open_directory
from garrison.domain import (
    TRANSITIONS,
    Level,
    Network,
    PrincipalKind,
    Status,
    VendorStatus,
    VendorTerms,
)
from garrison.domain.networks import parse_network
from garrison.errors import BadRequest, Conflict
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot
from garrison.store.directory import KEY_MAX_LIFETIME_S
from garrison.store.snapshot import Snapshot
from garrison.store.vendors import expire_ended_contracts

NOW = 1_800_000_000.0
DAY = 86400.0
VENDORS = ("v0", "v1")
COMPARTMENTS = ("alpha", "bravo", "charlie")
VENDOR_NETWORK_POOL = ("10.1.0.0/16", "192.168.0.0/24", "2001:db8::/32")
KEY_NETWORK_POOL = (
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.0.0.0/8",
    "192.168.0.128/25",
    "192.168.1.0/24",
    "172.16.0.0/12",
    "2001:db8:1::/48",
    "2001:db8::/31",
    "::ffff:10.1.0.0/112",
    "0.0.0.0/0",
)
LIFETIMES = (
    float(KEY_MAX_LIFETIME_S),
    3600.0,
    10 * DAY,
    45 * DAY,
    float(KEY_MAX_LIFETIME_S),
    KEY_MAX_LIFETIME_S + 1.0,
    0.0,
)

levels = st.sampled_from(list(Level))
compartment_sets = st.frozensets(st.sampled_from(COMPARTMENTS), max_size=3)


@dataclass(frozen=True)
class VendorSpec:
    seats: int
    ceiling: Level
    ceiling_compartments: frozenset[str]
    networks: tuple[str, ...]
    days: float
    activate: bool


vendor_specs = st.builds(
    VendorSpec,
    seats=st.integers(min_value=1, max_value=4),
    ceiling=levels,
    ceiling_compartments=compartment_sets,
    networks=st.lists(
        st.sampled_from(VENDOR_NETWORK_POOL), min_size=1, max_size=3, unique=True
    ).map(tuple),
    days=st.floats(min_value=1, max_value=40),
    activate=st.sampled_from([True, True, False]),
)

vendor_index = st.integers(min_value=0, max_value=len(VENDORS) - 1)
principal_index = st.integers(min_value=0, max_value=7)
# Mostly plausible requests (low clearances, few compartments, networks near the vendor's)
# so that sequences get far enough to fill seats, issue keys and change status; the rest are
# the out-of-bounds requests the rules must refuse.
person_levels = st.sampled_from([Level.PUBLIC, Level.PUBLIC, Level.INTERNAL, *Level])
person_compartments: st.SearchStrategy[frozenset[str]] = st.one_of(
    st.just(frozenset()), compartment_sets
)
key_networks: st.SearchStrategy[list[str]] = st.one_of(
    st.just([]),
    st.just([]),
    st.lists(st.sampled_from(KEY_NETWORK_POOL), min_size=1, max_size=2, unique=True),
)
person_op = st.tuples(st.just("person"), vendor_index, person_levels, person_compartments)
key_op = st.tuples(st.just("key"), principal_index, key_networks, st.sampled_from(LIFETIMES))
ops = st.one_of(
    person_op,
    person_op,
    key_op,
    key_op,
    st.tuples(st.just("disable"), principal_index),
    st.tuples(st.just("enable"), principal_index),
    st.tuples(
        st.just("status"),
        vendor_index,
        st.sampled_from([VendorStatus.SUSPENDED, VendorStatus.ACTIVE, *VendorStatus]),
    ),
    st.tuples(st.just("tick"), st.floats(min_value=0, max_value=6 * DAY)),
    st.tuples(st.just("contract-clock")),
)


@dataclass
class Run:
    directory: Directory
    sealer: Sealer
    now: float = NOW
    people: list[tuple[str, str]] = field(default_factory=list)  # (vendor, principal id)
    counter: int = 0

    def snapshot(self) -> Snapshot:
        return load_snapshot(self.directory.engine, self.sealer)


# The rules restated here, independently of ``VendorTerms`` (which is under test).
def inside(net: Network, vendor_networks: tuple[Network, ...]) -> bool:
    return any(
        net.version == outer.version
        and net.network_address in outer
        and net.broadcast_address in outer
        for outer in vendor_networks
    )


def within_ceiling(terms: VendorTerms, level: Level, compartments: frozenset[str]) -> bool:
    return int(level) <= int(terms.ceiling_level) and compartments.issubset(
        terms.ceiling_compartments
    )


def terms_by_name(snap: Snapshot) -> dict[str, tuple[str, VendorTerms]]:
    return {o.name: (o.id, o.vendor) for o in snap.orgs.values() if o.vendor is not None}


def active_seats(snap: Snapshot, org_id: str) -> int:
    return sum(
        1 for p in snap.principals.values() if p.org_id == org_id and p.status is Status.ACTIVE
    )


def check_invariants(snap: Snapshot) -> None:
    for org in snap.orgs.values():
        terms = org.vendor
        if terms is None:
            continue
        members = {p.id: p for p in snap.principals.values() if p.org_id == org.id}
        active = [p for p in members.values() if p.status is Status.ACTIVE]
        assert len(active) <= terms.seat_limit, (org.name, len(active), terms.seat_limit)
        for p in active:
            assert within_ceiling(terms, p.clearance, p.compartments), (org.name, p)
        live = [c for c in snap.credentials.values() if c.principal_id in members and not c.revoked]
        for cred in live:
            assert cred.networks, ("vendor key without networks", cred.id)
            assert all(inside(n, terms.networks) for n in cred.networks), (org.name, cred)
            assert cred.expires_at is not None and cred.expires_at <= terms.contract_end, cred
        if terms.status is VendorStatus.OFFBOARDED:
            assert not active and not live, org.name


def expect_person(snap: Snapshot, vendor: str, level: Level, comps: frozenset[str]) -> bool:
    org_id, terms = terms_by_name(snap)[vendor]
    return (
        terms.status in (VendorStatus.ONBOARDING, VendorStatus.ACTIVE)
        and within_ceiling(terms, level, comps)
        and active_seats(snap, org_id) < terms.seat_limit
    )


def expect_enable(snap: Snapshot, vendor: str, principal_id: str) -> bool:
    p = snap.principals[principal_id]
    if p.status is Status.ACTIVE:
        return True  # nothing changes, nothing to check
    return expect_person(snap, vendor, p.clearance, p.compartments)


def expect_key(
    snap: Snapshot, vendor: str, principal_id: str, nets: list[str], lifetime: float, now: float
) -> bool:
    _, terms = terms_by_name(snap)[vendor]
    # An IPv4-mapped IPv6 network names IPv4 hosts: the directory stores it as IPv4 (found
    # by hypothesis: ::ffff:10.1.0.0/112 is 10.1.0.0/16, inside a 10.1.0.0/16 vendor).
    wanted = [parse_network(n) for n in nets] or list(terms.networks)
    return (
        snap.principals[principal_id].status is Status.ACTIVE
        and terms.status in (VendorStatus.ONBOARDING, VendorStatus.ACTIVE)
        and now < terms.contract_end
        and 0 < lifetime <= KEY_MAX_LIFETIME_S
        and all(inside(n, terms.networks) for n in wanted)
    )


def expect_status(snap: Snapshot, vendor: str, target: VendorStatus, now: float) -> bool:
    _, terms = terms_by_name(snap)[vendor]
    if target not in TRANSITIONS[terms.status]:
        return False
    return target is not VendorStatus.ACTIVE or now < terms.contract_end


def attempt(expected: bool, call: Any, *args: Any, **kw: Any) -> Any:
    """Run a directory call; it must succeed exactly when ``expected``."""
    try:
        result = call(*args, **kw)
    except (BadRequest, Conflict) as exc:
        assert not expected, f"refused but should be accepted: {exc}"
        return None
    assert expected, f"accepted but should be refused: {call.__name__}{args} {kw}"
    return result


def step(run: Run, op: tuple[Any, ...]) -> None:
    d, snap = run.directory, run.snapshot()
    kind = op[0]
    if kind == "tick":
        run.now += op[1]
    elif kind == "contract-clock":
        expire_ended_contracts(d, run.now)
    elif kind == "person":
        _, v, level, comps = op
        vendor = VENDORS[v]
        run.counter += 1
        name = f"p{run.counter}"
        created = attempt(
            expect_person(snap, vendor, level, comps),
            d.create_principal,
            name,
            org=vendor,
            kind=PrincipalKind.HUMAN,
            clearance=level,
            compartments=sorted(comps),
            now=run.now,
        )
        if created is not None:
            run.people.append((vendor, created))
    elif kind == "status":
        _, v, target = op
        vendor = VENDORS[v]
        attempt(
            expect_status(snap, vendor, target, run.now),
            d.set_vendor_status,
            vendor,
            target,
            now=run.now,
        )
    else:
        vendor, principal_id = run.people[op[1] % len(run.people)]
        if kind == "disable":
            d.set_principal_status(principal_id, Status.DISABLED, now=run.now)
        elif kind == "enable":
            attempt(
                expect_enable(snap, vendor, principal_id),
                d.set_principal_status,
                principal_id,
                Status.ACTIVE,
                now=run.now,
            )
        elif kind == "key":
            _, _, nets, lifetime = op
            attempt(
                expect_key(snap, vendor, principal_id, nets, lifetime, run.now),
                d.create_key,
                principal_id,
                now=run.now,
                expires_in=lifetime,
                networks=nets,
            )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    specs=st.tuples(vendor_specs, vendor_specs),
    sequence=st.lists(ops, min_size=6, max_size=20),
)
def test_no_sequence_of_admin_calls_breaks_a_vendors_terms(
    specs: tuple[VendorSpec, VendorSpec], sequence: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        done = init(Path(tmp) / "data")
        d = open_directory(done.settings, actor="property")
        try:
            d.create_principal(
                "sponsor",
                org="internal",
                kind=PrincipalKind.HUMAN,
                clearance=Level.CRITICAL,
                now=NOW,
            )
            for name, spec in zip(VENDORS, specs, strict=True):
                d.create_vendor(
                    name,
                    sponsor="sponsor",
                    contract_start=NOW - DAY,
                    contract_end=NOW + spec.days * DAY,
                    networks=spec.networks,
                    seat_limit=spec.seats,
                    ceiling_level=spec.ceiling,
                    ceiling_compartments=sorted(spec.ceiling_compartments),
                    now=NOW,
                )
                if spec.activate:
                    d.set_vendor_status(name, VendorStatus.ACTIVE, now=NOW)
            run = Run(d, Sealer.from_dir(done.settings.key_dir))
            for name in VENDORS:  # someone to issue keys to from the first step
                first = d.create_principal(
                    f"{name}-first",
                    org=name,
                    kind=PrincipalKind.HUMAN,
                    clearance=Level.PUBLIC,
                    now=NOW,
                )
                run.people.append((name, first))
            check_invariants(run.snapshot())
            for op in sequence:
                step(run, op)
                check_invariants(run.snapshot())
        finally:
            d.engine.dispose()
