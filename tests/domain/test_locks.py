"""``LockSet``: which calls a set of locks covers (pure; no I/O).

Each kind covers exactly its own target, a network lock covers the addresses it holds (IPv4
and IPv6), a lock with an expiry stops covering at that instant, and a global lockdown covers
everything unless the caller asks to leave it out (the admin API does).
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import pytest

from garrison.domain.locks import EMPTY_LOCKS, Lock, LockKind, LockSet

NOW = 1_800_000_000.0

# The keyword of ``LockSet.covering`` each id-targeted kind is matched against.
FIELD = {
    LockKind.CREDENTIAL: "credential_id",
    LockKind.PRINCIPAL: "principal_id",
    LockKind.VENDOR: "org_id",
    LockKind.MODEL: "model_id",
}
ID_KINDS = tuple(FIELD)


def lock(
    kind: LockKind,
    target: str,
    *,
    lock_id: str | None = None,
    expires_at: float | None = None,
) -> Lock:
    network = ipaddress.ip_network(target) if kind is LockKind.NETWORK else None
    return Lock(
        id=lock_id or f"lck_{kind.value}_{target}",
        kind=kind,
        target=target,
        reason="test",
        created_by="admin",
        created_at=NOW - 60,
        expires_at=expires_at,
        network=network,
    )


def only(field: str, value: str) -> dict[str, Any]:
    """Keyword arguments for ``covering`` setting one attribute of the call."""
    return {field: value}


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# A call with every attribute set, none of which any lock below targets.
UNRELATED: dict[str, Any] = {
    "credential_id": "cred-other",
    "principal_id": "prn-other",
    "org_id": "org-other",
    "model_id": "mdl-other",
    "address": ip("192.0.2.77"),
}


# ── each kind covers exactly its target ──────────────────────────────────────────────────
@pytest.mark.parametrize("kind", ID_KINDS, ids=lambda k: k.value)
def test_id_lock_covers_its_target(kind: LockKind) -> None:
    the_lock = lock(kind, "x-1")
    locks = LockSet.build([the_lock])
    assert locks.covering(NOW, **only(FIELD[kind], "x-1")) is the_lock
    # Among a call's other attributes too.
    assert locks.covering(NOW, **{**UNRELATED, FIELD[kind]: "x-1"}) is the_lock


@pytest.mark.parametrize("kind", ID_KINDS, ids=lambda k: k.value)
def test_id_lock_does_not_cover_another_target(kind: LockKind) -> None:
    locks = LockSet.build([lock(kind, "x-1")])
    assert locks.covering(NOW, **only(FIELD[kind], "x-2")) is None
    assert locks.covering(NOW, **only(FIELD[kind], "x-10")) is None  # no prefix matching
    assert locks.covering(NOW, **only(FIELD[kind], "X-1")) is None  # ids are exact
    assert locks.covering(NOW, **UNRELATED) is None
    assert locks.covering(NOW) is None  # a call without attributes


@pytest.mark.parametrize(
    ("kind", "other"),
    list(itertools.permutations(ID_KINDS, 2)),
    ids=lambda k: k.value,
)
def test_id_lock_never_covers_the_same_value_in_another_field(
    kind: LockKind, other: LockKind
) -> None:
    """A principal lock on "x" does not cover a model (or key, or org) whose id is "x"."""
    locks = LockSet.build([lock(kind, "x")])
    assert locks.covering(NOW, **only(FIELD[other], "x")) is None


def test_all_covers_every_call() -> None:
    everything = lock(LockKind.ALL, "*")
    locks = LockSet.build([everything])
    assert locks.covering(NOW) is everything
    assert locks.covering(NOW, **UNRELATED) is everything
    assert locks.covering(NOW, address=ip("2001:db8::1")) is everything


def test_global_lock_left_out_when_asked() -> None:
    everything = lock(LockKind.ALL, "*")
    model = lock(LockKind.MODEL, "m-1")
    locks = LockSet.build([everything, model])
    assert locks.covering(NOW, **UNRELATED, include_global=False) is None
    # ...while the other locks still cover their targets.
    assert locks.covering(NOW, model_id="m-1", include_global=False) is model
    # With it (the default), the global lock comes first.
    assert locks.covering(NOW, model_id="m-1") is everything


# ── networks ─────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("cidr", "inside", "outside"),
    [
        ("10.1.2.0/24", ["10.1.2.0", "10.1.2.1", "10.1.2.255"], ["10.1.3.0", "10.1.1.255"]),
        ("127.0.0.2/32", ["127.0.0.2"], ["127.0.0.1", "127.0.0.3"]),
        ("0.0.0.0/0", ["1.2.3.4", "255.255.255.255"], ["::1"]),
        (
            "2001:db8:1::/48",
            ["2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff"],
            ["2001:db8:2::1", "2001:db8::1"],
        ),
        ("::1/128", ["::1"], ["::2", "127.0.0.1"]),
        ("::/0", ["2001:db8::1", "fe80::1"], ["10.0.0.1"]),
    ],
)
def test_network_lock_covers_addresses_it_holds(
    cidr: str, inside: list[str], outside: list[str]
) -> None:
    net = lock(LockKind.NETWORK, cidr)
    locks = LockSet.build([net])
    for address in inside:
        assert locks.covering(NOW, address=ip(address)) is net, address
    for address in outside:
        assert locks.covering(NOW, address=ip(address)) is None, address


def test_network_lock_needs_an_address() -> None:
    locks = LockSet.build([lock(LockKind.NETWORK, "0.0.0.0/0"), lock(LockKind.NETWORK, "::/0")])
    assert locks.covering(NOW, **{k: v for k, v in UNRELATED.items() if k != "address"}) is None


def test_network_lock_is_not_matched_by_its_text() -> None:
    """A network lock targets addresses, never an id that happens to equal its CIDR text."""
    locks = LockSet.build([lock(LockKind.NETWORK, "10.0.0.0/8")])
    for field in FIELD.values():
        assert locks.covering(NOW, **only(field, "10.0.0.0/8")) is None


def test_ipv4_and_ipv6_networks_side_by_side() -> None:
    v4 = lock(LockKind.NETWORK, "192.0.2.0/24")
    v6 = lock(LockKind.NETWORK, "2001:db8::/32")
    locks = LockSet.build([v4, v6])
    assert locks.covering(NOW, address=ip("192.0.2.9")) is v4
    assert locks.covering(NOW, address=ip("2001:db8:abcd::9")) is v6
    assert locks.covering(NOW, address=ip("198.51.100.1")) is None
    assert locks.covering(NOW, address=ip("2001:db9::1")) is None


# ── expiry ───────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("kind", [*ID_KINDS, LockKind.NETWORK, LockKind.ALL], ids=str)
def test_lock_stops_covering_at_its_expiry(kind: LockKind) -> None:
    end = NOW + 100
    target = {LockKind.NETWORK: "10.0.0.0/8", LockKind.ALL: "*"}.get(kind, "x-1")
    the_lock = lock(kind, target, expires_at=end)
    locks = LockSet.build([the_lock])
    call: dict[str, Any] = {**UNRELATED, "address": ip("10.9.9.9")}
    if kind in FIELD:
        call[FIELD[kind]] = "x-1"
    assert locks.covering(NOW, **call) is the_lock
    assert locks.covering(end - 0.001, **call) is the_lock
    assert locks.covering(end, **call) is None  # the instant it ends, it no longer covers
    assert locks.covering(end + 3600, **call) is None
    assert the_lock.active(end - 0.001)
    assert not the_lock.active(end)


def test_lock_without_expiry_covers_forever() -> None:
    forever = lock(LockKind.MODEL, "m-1")
    assert forever.active(NOW + 1e9)
    assert LockSet.build([forever]).covering(NOW + 1e9, model_id="m-1") is forever


def test_expired_global_lock_leaves_the_others() -> None:
    everything = lock(LockKind.ALL, "*", expires_at=NOW)
    principal = lock(LockKind.PRINCIPAL, "p-1")
    locks = LockSet.build([everything, principal])
    assert locks.covering(NOW, principal_id="p-1") is principal
    assert locks.covering(NOW, principal_id="p-2") is None
    assert locks.covering(NOW - 1, principal_id="p-2") is everything


# ── the empty set ────────────────────────────────────────────────────────────────────────
def test_empty_set_covers_nothing() -> None:
    for empty in (EMPTY_LOCKS, LockSet(), LockSet.build([])):
        assert not empty
        assert len(empty) == 0
        assert empty.covering(NOW, **UNRELATED) is None
        assert empty.covering(NOW, address=ip("::1")) is None
        assert empty.covering(NOW) is None


def test_build_of_nothing_equals_the_empty_set() -> None:
    built = LockSet.build(iter(()))
    assert built.by_target == {}
    assert built.networks == () and built.everything == ()


# ── several locks ────────────────────────────────────────────────────────────────────────
def test_several_locks_each_cover_their_own_target() -> None:
    locks_list = [
        lock(LockKind.CREDENTIAL, "c-1"),
        lock(LockKind.PRINCIPAL, "p-1"),
        lock(LockKind.VENDOR, "o-1"),
        lock(LockKind.MODEL, "m-1"),
        lock(LockKind.NETWORK, "10.0.0.0/8"),
        lock(LockKind.NETWORK, "fd00::/8"),
    ]
    locks = LockSet.build(locks_list)
    assert bool(locks)
    assert len(locks) == len(locks_list)
    c, p, o, m, n4, n6 = locks_list
    assert locks.covering(NOW, credential_id="c-1") is c
    assert locks.covering(NOW, principal_id="p-1") is p
    assert locks.covering(NOW, org_id="o-1") is o
    assert locks.covering(NOW, model_id="m-1") is m
    assert locks.covering(NOW, address=ip("10.200.0.1")) is n4
    assert locks.covering(NOW, address=ip("fd12::1")) is n6
    assert locks.covering(NOW, **UNRELATED) is None
    # A call matching several: some lock covering it is returned.
    both = locks.covering(NOW, credential_id="c-1", model_id="m-1")
    assert both in (c, m)


def test_several_locks_on_one_target_the_active_one_covers() -> None:
    expired = lock(LockKind.PRINCIPAL, "p-1", lock_id="lck_old", expires_at=NOW - 1)
    current = lock(LockKind.PRINCIPAL, "p-1", lock_id="lck_new", expires_at=NOW + 60)
    later_expiry = lock(LockKind.PRINCIPAL, "p-1", lock_id="lck_long", expires_at=NOW + 600)
    locks = LockSet.build([expired, current, later_expiry])
    assert len(locks) == 3
    assert locks.covering(NOW, principal_id="p-1") is current
    # Once the first active one ends, the longer one still covers.
    assert locks.covering(NOW + 60, principal_id="p-1") is later_expiry
    assert locks.covering(NOW + 600, principal_id="p-1") is None


def test_overlapping_networks_an_expired_one_does_not_hide_the_other() -> None:
    narrow = lock(LockKind.NETWORK, "10.1.0.0/16", expires_at=NOW - 1)
    wide = lock(LockKind.NETWORK, "10.0.0.0/8")
    locks = LockSet.build([narrow, wide])
    assert locks.covering(NOW, address=ip("10.1.2.3")) is wide
    assert locks.covering(NOW, address=ip("11.0.0.1")) is None


def test_only_expired_locks_cover_nothing_but_still_count() -> None:
    """Expired locks stay in the set (the snapshot keeps unlifted ones) but never cover."""
    gone = [
        lock(LockKind.ALL, "*", expires_at=NOW),
        lock(LockKind.MODEL, "m-1", expires_at=NOW),
        lock(LockKind.NETWORK, "0.0.0.0/0", expires_at=NOW),
    ]
    locks = LockSet.build(gone)
    assert bool(locks) and len(locks) == 3
    assert locks.covering(NOW, model_id="m-1", address=ip("1.1.1.1")) is None


def test_the_set_is_read_only() -> None:
    locks = LockSet.build([lock(LockKind.MODEL, "m-1")])
    with pytest.raises(TypeError):
        locks.by_target[(LockKind.MODEL, "m-2")] = ()  # type: ignore[index]
