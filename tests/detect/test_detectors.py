"""Tests for the built-in detectors (``garrison.detect.detectors`` builds them): for each
detector, what it must catch and what it must not — windows and thresholds at their
boundaries, learning periods, once-per-crossing, IPv6 networks, malformed addresses, and
events that are not calls.

Detectors are pure: observations and a ``Facts`` snapshot in, findings out. Each test builds
its detector from a rule parsed the way a rules file is, so the parameters are validated.
"""

from __future__ import annotations

import calendar
import ipaddress
from collections.abc import Iterable, Sequence
from types import EllipsisType, MappingProxyType
from typing import Any

import pytest
import yaml

from garrison.audit.events import AuditEvent, EventName, decode
from garrison.audit.payloads import CallFields, Payload, RequestAllowed, RequestCompleted
from garrison.detect import detectors, refusals
from garrison.detect.observation import Finding, Obs, Severity, network_of
from garrison.detect.rules import DETECTORS, Rule, parse_rules
from garrison.domain import (
    Credential,
    Level,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Status,
    VendorStatus,
    VendorTerms,
)
from garrison.store.snapshot import Snapshot

DAY = 86400.0
# Monday 2 March 2026, 00:00 UTC.
T0 = float(calendar.timegm((2026, 3, 2, 0, 0, 0)))


# ── the directory ─────────────────────────────────────────────────────────────────────────
def _principal(pid: str, org: str) -> Principal:
    return Principal(
        id=pid,
        name=pid,
        org_id=org,
        kind=PrincipalKind.HUMAN,
        clearance=Level.RESTRICTED,
        compartments=frozenset(),
        status=Status.ACTIVE,
    )


def _key(kid: str, pid: str, created_at: float, *, canary: bool = False) -> Credential:
    return Credential(
        id=kid,
        principal_id=pid,
        secret_hash=b"\x00" * 32,
        created_at=created_at,
        expires_at=None,
        networks=(),
        canary=canary,
    )


def make_facts() -> Snapshot:
    vendor = VendorTerms(
        sponsor_id="alice",
        contract_start=T0 - 365 * DAY,
        contract_end=T0 + 365 * DAY,
        networks=(ipaddress.ip_network("203.0.113.0/24"),),
        seat_limit=10,
        ceiling_level=Level.RESTRICTED,
        ceiling_compartments=frozenset(),
        status=VendorStatus.ACTIVE,
    )
    orgs = {
        "acme": Org("acme", "Acme", OrgKind.INTERNAL),
        "vend": Org("vend", "Vendor Ltd", OrgKind.VENDOR, vendor),
    }
    principals = {
        "alice": _principal("alice", "acme"),
        "bob": _principal("bob", "acme"),
        "vic": _principal("vic", "vend"),
        "vera": _principal("vera", "vend"),
    }
    credentials = {
        "k-alice": _key("k-alice", "alice", T0 - DAY),
        "k-bob": _key("k-bob", "bob", T0 - DAY),
        "k-vic": _key("k-vic", "vic", T0 - DAY),
        "k-vera": _key("k-vera", "vera", T0 - DAY),
        "k-canary": _key("k-canary", "bob", T0 - 400 * DAY, canary=True),
        "k-old": _key("k-old", "alice", T0 - 31 * DAY),
        "k-29d": _key("k-29d", "alice", T0 - 29 * DAY),
        "k-30d": _key("k-30d", "alice", T0 - 30 * DAY),
    }
    return Snapshot(
        1,
        orgs=MappingProxyType(orgs),
        principals=MappingProxyType(principals),
        credentials=MappingProxyType(credentials),
        models=MappingProxyType({}),
    )


FACTS = make_facts()
OWNER = {"k-alice": "alice", "k-bob": "bob", "k-vic": "vic", "k-vera": "vera"}
ORG = {"alice": "acme", "bob": "acme", "vic": "vend", "vera": "vend"}


# ── building rules and observations ──────────────────────────────────────────────────────
def make_rule(
    detector: str, *, level: str = "medium", rule_id: str | None = None, **params: Any
) -> Rule:
    doc = {
        "rules": [
            {
                "id": rule_id or f"test-{detector.replace('_', '-')}",
                "title": f"test {detector}",
                "level": level,
                "detector": detector,
                **params,
            }
        ]
    }
    (rule,) = parse_rules(yaml.safe_dump(doc), "test").rules
    return rule


def make(detector: str, *, last_used: dict[str, float] | None = None, **params: Any) -> Any:
    return detectors.build(make_rule(detector, **params), last_used=last_used)


_counter = iter(range(10**9))


def obs(
    at: float,
    *,
    name: str = "request.allowed",
    key: str | None = "k-alice",
    principal: str | EllipsisType | None = ...,  # default: the key's owner
    org: str | EllipsisType | None = ...,  # default: the principal's org
    address: str | None = "10.1.1.5",
    model: str | None = "m1",
    status: int | None = None,
    reasons: Sequence[str] = (),
    presented: str | None = None,
    tokens_in: int = 0,
    tokens_out: int = 0,
    flags: Sequence[str] = (),
    index: int | None = None,
) -> Obs:
    if principal is ...:
        principal = OWNER.get(key or "")
    if org is ...:
        org = ORG.get(principal or "")
    return Obs(
        index=next(_counter) if index is None else index,
        name=name,
        at=at,
        principal_id=principal,
        credential_id=key,
        model=model,
        org_id=org,
        address=address,
        status=status,
        reasons=tuple(reasons),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        presented_key_id=presented,
        content_flags=tuple(flags),
    )


def denied(at: float, *reasons: str, status: int = 403, **kw: Any) -> Obs:
    return obs(at, name="request.denied", status=status, reasons=reasons, **kw)


def feed(detector: Any, observations: Iterable[Obs], facts: Snapshot = FACTS) -> list[Finding]:
    out: list[Finding] = []
    for o in observations:
        out.extend(detector.observe(o, facts))
    return out


# ── observation plumbing ──────────────────────────────────────────────────────────────────
def test_every_detector_has_a_builder() -> None:
    assert set(detectors.BUILDERS) == set(DETECTORS)
    for name in DETECTORS:
        required: dict[str, dict[str, Any]] = {
            "content": {"patterns": ["x"]},
            "refusal_reason": {"reasons": ["policy.error"]},
        }
        params = required.get(name, {})
        assert make(name, **params).rule.detector == name


def _typed(payload: Payload) -> AuditEvent:
    return AuditEvent(
        payload.NAME,
        at=T0 + 12.5,
        actor="alice",
        request_id="r1",
        principal_id="alice",
        credential_id="k-alice",
        model="m1",
        data=payload.as_data(),
        payload=payload,
    )


def test_obs_from_event_and_from_its_stored_record_agree() -> None:
    event = _typed(
        RequestCompleted(
            status=200,
            outcome="ok",
            reasons=("allowed",),
            metered=True,
            tokens_in=12,
            tokens_out=None,  # output usage unknown
            bytes_out=10,
            duration_ms=1.5,
            call=CallFields("chat", "10.1.1.5", "acme"),
        )
    )
    live = Obs.from_event(7, event)
    stored = Obs.from_record(decode(event.encode(7)))
    assert live == stored
    assert live.index == 7
    assert live.tokens_in == 12 and live.tokens_out == 0
    assert live.reasons == ("allowed",)
    assert live.address == "10.1.1.5" and live.org_id == "acme" and live.outcome == "ok"
    allowed = _typed(
        RequestAllowed(
            reasons=("allowed",),
            policies=(),
            stream=False,
            upstream_model="u",
            level="internal",
            content_flags=("prompt-x",),
            call=CallFields("chat", "10.1.1.5", "acme"),
        )
    )
    live = Obs.from_event(8, allowed)
    assert live == Obs.from_record(decode(allowed.encode(8)))
    assert live.content_flags == ("prompt-x",) and live.status is None


def test_obs_of_an_event_built_from_a_dictionary_reads_as_its_record() -> None:
    event = AuditEvent(
        EventName.ADMIN_DENIED,
        at=T0,
        credential_id=None,
        data={"client_address": "10.1.1.5", "status": 401, "reasons": ["credential.unknown"]},
    )
    live = Obs.from_event(3, event)
    assert live == Obs.from_record(decode(event.encode(3)))
    assert live.status == 401 and live.reasons == ("credential.unknown",)


def test_obs_key_is_the_credential_or_else_the_presented_key() -> None:
    assert obs(T0, key="k-alice").key == "k-alice"
    assert obs(T0, key=None, presented="k-x").key == "k-x"
    assert obs(T0, key="k-alice", presented="k-x").key == "k-alice"
    assert obs(T0, key=None).key is None


def test_obs_from_a_record_without_index_or_data() -> None:
    o = Obs.from_record({"name": "gateway.started", "at": 5})
    assert (o.index, o.at, o.principal_id, o.reasons, o.tokens_in) == (-1, 5.0, None, (), 0)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("10.1.2.3", "10.1.2.0/24"),
        ("10.1.2.255", "10.1.2.0/24"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("not-an-address", None),
        ("", None),
        ("10.1.2.3/24", None),
        ("10.1.2.300", None),
    ],
)
def test_network_of(address: str, network: str | None) -> None:
    assert network_of(address, 24, 64) == network


def test_network_of_uses_the_family_prefix() -> None:
    assert network_of("10.1.2.3", 16, 48) == "10.1.0.0/16"
    assert network_of("2001:db8:1:2::1", 16, 48) == "2001:db8:1::/48"


def test_severity_parse_and_label() -> None:
    assert Severity.parse(" High ") is Severity.HIGH
    assert Severity.CRITICAL.label == "critical"
    with pytest.raises(ValueError, match="unknown level"):
        Severity.parse("severe")


# ── events that are not calls ────────────────────────────────────────────────────────────
# Events that are neither calls nor admin API calls (admin.* events are read: a canary or a
# burst of refusals on the admin API counts as much as on the data plane).
NOT_CALLS = ("credential.created", "alert.raised", "gateway.started", "rules.loaded")
HAIR_TRIGGER: dict[str, dict[str, Any]] = {
    "multi_network": {"window": 3600},
    "new_network": {"learning_events": 0},
    "volume": {"warmup_buckets": 0, "min_calls": 1, "max_calls_per_bucket": 1},
    "refusal_burst": {"threshold": 2},
    "off_hours": {"learning_events": 1, "min_share": 0.99},
    "dormant": {"dormant": 1},
    "content": {"patterns": ["x"], "rule_id": "flagged"},
    "extraction": {"calls_per_bucket": 1, "sustained_buckets": 1},
    "refusal_reason": {"reasons": ["credential.network_not_allowed"]},
}


@pytest.mark.parametrize("detector", sorted(DETECTORS))
@pytest.mark.parametrize("name", NOT_CALLS)
def test_events_that_are_not_calls_are_ignored(detector: str, name: str) -> None:
    d = make(detector, **HAIR_TRIGGER.get(detector, {}))
    stream = []
    for n in range(30):
        for key in ("k-canary", "k-old", "k-alice"):
            stream.append(
                obs(
                    T0 + n * 3600 + 5,
                    name=name,
                    key=key,
                    address=f"10.{n}.0.1",
                    status=403,
                    reasons=("credential.network_not_allowed", "vendor.outside_contract"),
                    flags=("flagged",),
                    tokens_in=10**7,
                )
            )
    assert feed(d, stream) == []


# ── canary ────────────────────────────────────────────────────────────────────────────────
def test_canary_used_successfully_is_critical() -> None:
    d = make("canary", level="critical")
    o = obs(T0, key="k-canary", address="198.51.100.7", index=42)
    (f,) = feed(d, [o])
    assert f.severity is Severity.CRITICAL
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "credential",
        "k-canary",
        "credential.canary",
    )
    assert f.evidence == (42,)
    assert f.data["address"] == "198.51.100.7"
    assert f.credential_id == "k-canary" and f.at == T0


def test_canary_presented_but_not_authenticated_is_still_caught() -> None:
    # Wrong secret: the gateway records only the presented key id; no principal, no credential.
    d = make("canary")
    o = denied(
        T0, "credential.bad_secret", status=401, key=None, principal=None, presented="k-canary"
    )
    (f,) = feed(d, [o])
    assert f.subject_id == "k-canary" and f.credential_id == "k-canary"
    assert f.principal_id is None


def test_canary_ignores_ordinary_unknown_and_missing_keys() -> None:
    d = make("canary")
    stream = [
        obs(T0, key="k-alice"),
        denied(T0, "credential.unknown", status=401, key=None, principal=None, presented="k-nope"),
        denied(T0, "credential.missing", status=401, key=None, principal=None),
    ]
    assert feed(d, stream) == []


def test_canary_every_use_is_reported() -> None:
    # Deduplication is the engine's job; the detector reports each use.
    d = make("canary")
    assert len(feed(d, [obs(T0 + i, key="k-canary") for i in range(3)])) == 3


# ── out of network ────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("reason", ["credential.network_not_allowed", "vendor.network_not_allowed"])
def test_out_of_network_refusal_is_caught(reason: str) -> None:
    d = make("out_of_network", level="high")
    (f,) = feed(d, [denied(T0, reason, key="k-vic", address="198.51.100.9")])
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "credential",
        "k-vic",
        "credential.out_of_network",
    )
    assert f.data["address"] == "198.51.100.9" and f.org_id == "vend"


def test_out_of_network_without_a_key_names_the_address() -> None:
    d = make("out_of_network")
    o = denied(T0, "vendor.network_not_allowed", key=None, principal=None, address="198.51.100.9")
    (f,) = feed(d, [o])
    assert f.subject_id == "198.51.100.9"
    o = denied(T0, "vendor.network_not_allowed", key=None, principal=None, address=None)
    assert feed(d, [o])[0].subject_id == "-"


def test_out_of_network_ignores_other_refusals_and_allowed_calls() -> None:
    d = make("out_of_network")
    stream = [
        denied(T0, "model.unknown", status=404),
        denied(T0, "lock.active"),
        denied(T0, "credential.expired", status=401),
        obs(T0, reasons=("allowed",)),
    ]
    assert feed(d, stream) == []


# ── multi network ─────────────────────────────────────────────────────────────────────────
def test_multi_network_same_network_different_hosts_is_fine() -> None:
    d = make("multi_network", window="10m")
    stream = [obs(T0 + i, address=f"10.1.1.{i + 1}") for i in range(50)]
    assert feed(d, stream) == []


def test_multi_network_second_network_within_the_window() -> None:
    d = make("multi_network", level="high", window="10m")
    a = obs(T0, address="10.1.1.5", index=1)
    b = obs(T0 + 300, address="198.51.100.7", index=2)
    (f,) = feed(d, [a, b])
    assert f.severity is Severity.HIGH
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "credential",
        "k-alice",
        "credential.multi_network",
    )
    assert f.data["networks"] == ["10.1.1.0/24", "198.51.100.0/24"]
    assert f.evidence == (1, 2)
    assert f.principal_id == "alice"


def test_multi_network_window_boundary() -> None:
    # The first network is still "at once" exactly `window` later; a moment after, it is not.
    d = make("multi_network", window=600)
    assert len(feed(d, [obs(T0, address="10.1.1.5"), obs(T0 + 600, address="10.2.2.5")])) == 1
    d = make("multi_network", window=600)
    assert feed(d, [obs(T0, address="10.1.1.5"), obs(T0 + 600.5, address="10.2.2.5")]) == []


def test_multi_network_a_network_stays_recent_while_in_use() -> None:
    # Network A is used every 5 minutes for an hour; B appears at the end: they overlap.
    d = make("multi_network", window="10m")
    stream = [obs(T0 + i * 300, address="10.1.1.5") for i in range(13)]
    stream.append(obs(T0 + 12 * 300 + 30, address="10.2.2.5"))
    assert len(feed(d, stream)) == 1


def test_multi_network_once_per_new_network() -> None:
    d = make("multi_network", window="10m")
    stream = [
        obs(T0, address="10.1.1.5"),
        obs(T0 + 10, address="10.2.2.5"),  # fires: 2 networks
        obs(T0 + 20, address="10.2.2.6"),  # same network again: nothing new
        obs(T0 + 30, address="10.1.1.9"),
        obs(T0 + 40, address="10.3.3.5"),  # fires again: a third network
    ]
    found = feed(d, stream)
    assert [len(f.data["networks"]) for f in found] == [2, 3]


def test_multi_network_min_networks() -> None:
    d = make("multi_network", window="10m", min_networks=3)
    first = feed(d, [obs(T0, address="10.1.1.5"), obs(T0 + 1, address="10.2.2.5")])
    assert first == []
    assert len(feed(d, [obs(T0 + 2, address="10.3.3.5")])) == 1


def test_multi_network_keys_are_independent() -> None:
    d = make("multi_network", window="10m")
    stream = [
        obs(T0, key="k-alice", address="10.1.1.5"),
        obs(T0 + 1, key="k-bob", address="10.2.2.5"),
    ]
    assert feed(d, stream) == []


def test_multi_network_ipv6_uses_the_64() -> None:
    d = make("multi_network", window="10m")
    same = [
        obs(T0, address="2001:db8:1:2::1"),
        obs(T0 + 1, address="2001:db8:1:2:dead:beef:1:2"),  # privacy address, same /64
    ]
    assert feed(d, same) == []
    (f,) = feed(d, [obs(T0 + 2, address="2001:db8:1:3::1")])
    assert f.data["networks"] == ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]


def test_multi_network_ipv6_prefix_is_configurable() -> None:
    d = make("multi_network", window="10m", prefix_v6=48, prefix_v4=16)
    stream = [
        obs(T0, address="2001:db8:1:2::1"),
        obs(T0 + 1, address="2001:db8:1:3::1"),  # same /48
        obs(T0 + 2, address="10.1.1.5"),
        obs(T0 + 3, address="10.1.200.5"),  # same /16 as the previous one
    ]
    found = feed(d, stream)
    assert len(found) == 1  # only the IPv4 /16 joining the IPv6 /48
    assert found[0].data["networks"] == ["10.1.0.0/16", "2001:db8:1::/48"]


def test_multi_network_malformed_and_missing_addresses_are_ignored() -> None:
    d = make("multi_network", window="10m")
    stream = [
        obs(T0, address="10.1.1.5"),
        obs(T0 + 1, address="garbage"),
        obs(T0 + 2, address=""),
        obs(T0 + 3, address=None),
        obs(T0 + 4, address="10.1.1.300"),
    ]
    assert feed(d, stream) == []


def test_multi_network_counts_only_successful_use_of_a_key() -> None:
    d = make("multi_network", window="10m")
    stream = [
        obs(T0, address="10.1.1.5"),
        denied(T0 + 1, "credential.network_not_allowed", address="10.2.2.5"),
        denied(T0 + 2, "credential.bad_secret", key=None, presented="k-alice", address="10.3.3.5"),
        obs(T0 + 3, name="request.completed", address="10.4.4.5"),
        obs(T0 + 4, key=None, principal="alice", address="10.5.5.5"),
    ]
    assert feed(d, stream) == []


# ── new network ───────────────────────────────────────────────────────────────────────────
def test_new_network_after_learning() -> None:
    d = make("new_network", learning_events=20)
    learning = [obs(T0 + i, address=f"10.1.1.{i + 1}") for i in range(20)]
    assert feed(d, learning) == []
    (f,) = feed(d, [obs(T0 + 100, address="198.51.100.7", index=77)])
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "principal",
        "alice",
        "principal.new_network",
    )
    assert f.data["network"] == "198.51.100.0/24" and f.evidence == (77,)
    # Known from now on.
    assert feed(d, [obs(T0 + 200, address="198.51.100.8")]) == []


def test_new_network_learning_boundary() -> None:
    # learning_events counts calls including the current one: the 3rd call is still learning.
    d = make("new_network", learning_events=3)
    stream = [
        obs(T0, address="10.1.1.5"),
        obs(T0 + 1, address="10.1.1.5"),
        obs(T0 + 2, address="10.2.2.5"),  # call 3: learned, not reported
    ]
    assert feed(d, stream) == []
    assert len(feed(d, [obs(T0 + 3, address="10.3.3.5")])) == 1  # call 4: reported
    assert feed(d, [obs(T0 + 4, address="10.2.2.9")]) == []  # learned during learning


def test_new_network_without_learning_the_first_network_is_not_new() -> None:
    d = make("new_network", learning_events=0)
    assert feed(d, [obs(T0, address="10.1.1.5")]) == []
    assert len(feed(d, [obs(T0 + 1, address="10.2.2.5")])) == 1


def test_new_network_is_per_principal() -> None:
    d = make("new_network", learning_events=2)
    stream = [obs(T0 + i, key="k-alice", address="10.1.1.5") for i in range(5)]
    stream += [obs(T0 + 10, key="k-bob", address="10.9.9.9")]  # bob's first network
    assert feed(d, stream) == []


def test_new_network_ipv6_same_64_is_not_new() -> None:
    d = make("new_network", learning_events=2)
    stream = [obs(T0 + i, address=f"2001:db8:1:2::{i + 1:x}") for i in range(5)]
    stream += [obs(T0 + 10, address="2001:db8:1:2:ffff::1")]
    assert feed(d, stream) == []
    (f,) = feed(d, [obs(T0 + 11, address="2001:db8:1:3::1")])
    assert f.data["network"] == "2001:db8:1:3::/64"


def test_new_network_malformed_addresses_neither_alert_nor_count_as_learning() -> None:
    d = make("new_network", learning_events=2)
    stream = [
        obs(T0, address="10.1.1.5"),
        obs(T0 + 1, address="garbage"),
        obs(T0 + 2, address=None),
        obs(T0 + 3, address="10.2.2.5"),  # only the 2nd parsed call: still learning
    ]
    assert feed(d, stream) == []


def test_new_network_ignores_refusals_and_keyless_events() -> None:
    d = make("new_network", learning_events=0)
    stream = [
        obs(T0, address="10.1.1.5"),
        denied(T0 + 1, "credential.network_not_allowed", address="10.2.2.5"),
        obs(T0 + 2, name="request.completed", address="10.3.3.5"),
        obs(T0 + 3, key=None, principal=None, address="10.4.4.5"),
    ]
    assert feed(d, stream) == []


# ── volume ────────────────────────────────────────────────────────────────────────────────
VOLUME: dict[str, Any] = {
    "bucket": "1m",
    "factor": 10,
    "min_calls": 30,
    "warmup_buckets": 5,
    "max_calls_per_bucket": 100,
    "max_tokens_per_bucket": 10_000,
}


def _steady(buckets: int, per_bucket: int, *, start: float = T0, key: str = "k-alice") -> list[Obs]:
    return [
        obs(start + b * 60 + i * (50 / per_bucket), key=key)
        for b in range(buckets)
        for i in range(per_bucket)
    ]


def _burst(n: int, at: float, key: str = "k-alice") -> list[Obs]:
    return [obs(at + i * 0.01, key=key) for i in range(n)]


def test_volume_over_baseline_after_warmup_boundary() -> None:
    d = make("volume", **VOLUME)
    assert feed(d, _steady(5, 3)) == []  # 5 buckets of 3 calls: baseline 3
    burst = _burst(31, T0 + 5 * 60)
    assert feed(d, burst[:30]) == []  # 30 = 10 x 3: not above
    (f,) = feed(d, burst[30:])
    assert (f.subject_kind, f.subject_id, f.reason) == ("principal", "alice", "principal.volume")
    assert f.data == {"calls": 31, "tokens": 0, "baseline": 3.0, "ceiling": False}


def test_volume_once_per_bucket() -> None:
    d = make("volume", **VOLUME)
    feed(d, _steady(5, 3))
    assert len(feed(d, _burst(90, T0 + 5 * 60))) == 1


def test_volume_baseline_follows_the_principal() -> None:
    d = make("volume", **VOLUME)
    feed(d, _steady(5, 3))
    assert len(feed(d, _burst(31, T0 + 5 * 60))) == 1
    # The busy minute raised the baseline (0.1 x 31 + 0.9 x 3 = 5.8): 31 is no longer 10x;
    # the line is now 58.
    burst = _burst(59, T0 + 6 * 60)
    assert feed(d, burst[:58]) == []
    (f,) = feed(d, burst[58:])
    assert f.data["calls"] == 59 and f.data["baseline"] == 5.8


def test_volume_no_baseline_alert_during_warmup() -> None:
    d = make("volume", **VOLUME)
    feed(d, _steady(4, 3))  # only 4 buckets closed
    assert feed(d, _burst(99, T0 + 4 * 60)) == []


def test_volume_min_calls_with_a_tiny_baseline() -> None:
    d = make("volume", **VOLUME)
    feed(d, _steady(6, 1, start=T0))  # baseline 1: ten times that is 10 calls
    burst = _burst(30, T0 + 6 * 60)
    assert feed(d, burst[:29]) == []  # above 10x but under min_calls
    assert len(feed(d, burst[29:])) == 1


def test_volume_call_ceiling_applies_before_warmup() -> None:
    d = make("volume", **VOLUME)
    burst = _burst(101, T0)  # the very first minute ever
    assert feed(d, burst[:100]) == []
    (f,) = feed(d, burst[100:])
    assert f.data["ceiling"] is True and f.data["calls"] == 101


def test_volume_token_ceiling_counts_completed_calls() -> None:
    d = make("volume", **VOLUME)
    done = [
        obs(T0 + i, name="request.completed", tokens_in=1000, tokens_out=1000) for i in range(6)
    ]
    assert feed(d, done[:5]) == []  # 10,000 tokens: at the ceiling, not over
    (f,) = feed(d, done[5:])
    assert f.data["tokens"] == 12_000 and f.data["ceiling"] is True
    # Once a bucket; the next minute starts afresh.
    more = [obs(T0 + 30, name="request.completed", tokens_in=50_000)]
    assert feed(d, more) == []
    assert len(feed(d, [obs(T0 + 61, name="request.completed", tokens_out=10_001)])) == 1


def test_volume_steady_traffic_never_alerts() -> None:
    d = make("volume", **VOLUME)
    stream = []
    for b in range(240):
        n = 20 + (b * 7) % 9  # 20..28 a minute
        stream += _steady(1, n, start=T0 + b * 60)
    assert feed(d, stream) == []


def test_volume_empty_minutes_count_towards_warmup_and_decay_the_baseline() -> None:
    d = make("volume", **VOLUME)
    feed(d, _steady(1, 3))
    # Ten quiet minutes later: warm (1 + 9 empty buckets), baseline decayed below 1.
    assert len(feed(d, _burst(30, T0 + 10 * 60))) == 1


def test_volume_is_per_principal_and_ignores_refusals() -> None:
    d = make("volume", **VOLUME)
    feed(d, _steady(5, 3, key="k-alice"))
    feed(d, _steady(5, 3, key="k-bob"))
    stream = _burst(20, T0 + 300, key="k-alice") + _burst(20, T0 + 300, key="k-bob")
    stream += [denied(T0 + 301, "model.unknown", status=404) for _ in range(200)]
    stream += [obs(T0 + 302, key=None, principal=None) for _ in range(200)]
    assert feed(d, stream) == []


# ── refusal burst ─────────────────────────────────────────────────────────────────────────
def _refusals(n: int, start: float, step: float = 1.0, **kw: Any) -> list[Obs]:
    kw.setdefault("status", 404)
    return [denied(start + i * step, "model.unknown", **kw) for i in range(n)]


def test_refusal_burst_threshold_boundary() -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    burst = _refusals(5, T0)
    assert feed(d, burst[:4]) == []
    (f,) = feed(d, burst[4:])
    assert (f.subject_kind, f.subject_id, f.reason) == ("credential", "k-alice", "refusals.burst")
    assert f.data["refusals"] == 5
    assert f.evidence == tuple(o.index for o in burst)


def test_refusal_burst_once_per_crossing() -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    assert len(feed(d, _refusals(40, T0, step=0.5))) == 1
    # Quiet, then a second burst: a second crossing.
    assert len(feed(d, _refusals(40, T0 + 600, step=0.5))) == 1


def test_refusal_burst_window_boundary() -> None:
    d = make("refusal_burst", window=60, threshold=5)
    assert len(feed(d, _refusals(5, T0, step=15.0))) == 1  # spans exactly 60 s
    d = make("refusal_burst", window=60, threshold=5)
    assert feed(d, _refusals(5, T0, step=15.2)) == []  # spans 60.8 s


def test_refusal_burst_slow_refusals_never_add_up() -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    assert feed(d, _refusals(500, T0, step=16.0)) == []


@pytest.mark.parametrize("status", [429, 503])
def test_refusal_burst_ignores_rate_limits_and_overload(status: int) -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    assert feed(d, _refusals(50, T0, step=0.1, status=status)) == []


def test_refusal_burst_unauthenticated_key_guessing_is_per_presented_key() -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    guesses = [
        denied(
            T0 + i, "credential.bad_secret", status=401, key=None, principal=None, presented="k-x"
        )
        for i in range(5)
    ]
    # Its address crosses at the same refusal: one finding, the key's.
    (f,) = feed(d, guesses)
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "credential",
        "k-x",
        refusals.REFUSALS_BURST,
    )


def test_refusal_burst_without_any_key_is_per_address() -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    stream = [
        denied(
            T0 + i,
            "credential.missing",
            status=401,
            key=None,
            principal=None,
            address="198.51.100.9",
        )
        for i in range(5)
    ]
    stream.append(denied(T0 + 6, "credential.missing", key=None, principal=None, address=None))
    (f,) = feed(d, stream)
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "address",
        "198.51.100.9",
        refusals.REFUSALS_ADDRESS_BURST,
    )
    assert f.data["address"] == "198.51.100.9"


def test_refusal_burst_subjects_are_separate() -> None:
    d = make("refusal_burst", window="1m", threshold=5)
    stream = _refusals(4, T0, key="k-alice") + _refusals(4, T0, key="k-bob")
    stream += [obs(T0 + 5) for _ in range(20)]  # allowed calls are not refusals
    assert feed(d, stream) == []


# ── outside contract ──────────────────────────────────────────────────────────────────────
def test_outside_contract_is_caught() -> None:
    d = make("outside_contract", level="high")
    (f,) = feed(d, [denied(T0, "vendor.outside_contract", key="k-vic")])
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "credential",
        "k-vic",
        "vendor.outside_contract",
    )
    assert f.data["org_id"] == "vend" and f.principal_id == "vic"


def test_outside_contract_ignores_other_refusals() -> None:
    d = make("outside_contract")
    stream = [
        denied(T0, "vendor.inactive", key="k-vic"),
        denied(T0, "vendor.network_not_allowed", key="k-vic"),
        obs(T0, key="k-vic"),
    ]
    assert feed(d, stream) == []


# ── off hours ─────────────────────────────────────────────────────────────────────────────
def _at_hour(day: int, hour: int, minute: int = 0) -> float:
    return T0 + day * DAY + hour * 3600 + minute * 60


def _office_hours(days: int, per_day: int, key: str = "k-alice") -> list[Obs]:
    # 09:00–16:59 UTC.
    return [
        obs(_at_hour(day, 9 + (i % 8), (i * 7) % 60), key=key)
        for day in range(days)
        for i in range(per_day)
    ]


def test_off_hours_after_learning() -> None:
    d = make("off_hours", level="low", learning_events=20, learning_span=1, min_share=0.05)
    assert feed(d, _office_hours(2, 10)) == []
    (f,) = feed(d, [obs(_at_hour(2, 3, 15))])
    assert f.severity is Severity.LOW
    assert (f.subject_kind, f.subject_id, f.reason) == ("principal", "alice", "principal.off_hours")
    assert f.data["hour"] == 3
    # Usual hours stay quiet.
    assert feed(d, [obs(_at_hour(2, 10)), obs(_at_hour(2, 16, 59))]) == []


def test_off_hours_nothing_during_learning() -> None:
    d = make("off_hours", learning_events=20, learning_span=1, min_share=0.05)
    stream = [*_office_hours(1, 19), obs(_at_hour(1, 3))]  # 19 calls learned: not yet
    assert feed(d, stream) == []


def test_off_hours_share_boundary() -> None:
    # One 03:00 call was learned; with 20 calls, its hour holds exactly 5 %: not unusual.
    d = make("off_hours", learning_events=20, learning_span=1, min_share=0.05)
    stream = [obs(_at_hour(0, 3)), *_office_hours(1, 19)]
    assert feed(d, stream) == []
    assert feed(d, [obs(_at_hour(1, 3))]) == []
    # 04:00 was never used.
    assert len(feed(d, [obs(_at_hour(1, 4))])) == 1


def test_off_hours_a_new_habit_stops_alerting() -> None:
    d = make("off_hours", learning_events=20, learning_span=1, min_share=0.05)
    feed(d, _office_hours(2, 10))
    late = [obs(_at_hour(2 + n, 22)) for n in range(5)]
    found = feed(d, late)
    # 0/20, 1/21 are under 5 %; 2/22 is 9 %.
    assert len(found) == 2


def test_off_hours_is_utc_and_per_principal() -> None:
    d = make("off_hours", learning_events=20, learning_span=1, min_share=0.05)
    feed(d, _office_hours(2, 10, key="k-alice"))
    feed(d, [obs(_at_hour(0, 2, n), key="k-bob") for n in range(30)])  # bob works at 02:00
    assert feed(d, [obs(_at_hour(3, 2, 30), key="k-bob")]) == []
    (f,) = feed(d, [obs(_at_hour(3, 2, 30), key="k-alice")])
    assert f.data["hour"] == 2


def test_off_hours_ignores_refusals_and_anonymous_calls() -> None:
    d = make("off_hours", learning_events=20, learning_span=1, min_share=0.05)
    feed(d, _office_hours(2, 10))
    stream = [
        denied(_at_hour(2, 3), "model.unknown", status=404),
        obs(_at_hour(2, 3), key=None, principal=None),
        obs(_at_hour(2, 3), name="request.completed"),
    ]
    assert feed(d, stream) == []


# ── dormant ───────────────────────────────────────────────────────────────────────────────
def test_dormant_never_used_key_uses_created_at() -> None:
    d = make("dormant", dormant="30d")
    (f,) = feed(d, [obs(T0, key="k-old", index=5)])  # created 31 days ago
    assert (f.subject_kind, f.subject_id, f.reason) == ("credential", "k-old", "credential.dormant")
    assert f.data["idle_days"] == 31.0 and f.evidence == (5,)


def test_dormant_boundary() -> None:
    d = make("dormant", dormant="30d")
    assert feed(d, [obs(T0, key="k-29d")]) == []
    assert len(feed(d, [obs(T0, key="k-30d")])) == 1  # exactly 30 days idle counts


def test_dormant_after_a_long_silence() -> None:
    d = make("dormant", dormant="30d")
    assert feed(d, [obs(T0, key="k-alice")]) == []
    assert feed(d, [obs(T0 + 29 * DAY, key="k-alice")]) == []
    (f,) = feed(d, [obs(T0 + 59.5 * DAY, key="k-alice")])
    assert f.data["idle_days"] == 30.5
    assert feed(d, [obs(T0 + 59.6 * DAY, key="k-alice")]) == []  # used again: no longer dormant


def test_dormant_primed_with_last_use() -> None:
    last_used = {"k-old": T0 - DAY, "k-alice": T0 - 40 * DAY}
    d = make("dormant", dormant="30d", last_used=last_used)
    # k-old was created long ago but used yesterday; k-alice's last use was 40 days ago.
    assert feed(d, [obs(T0, key="k-old")]) == []
    (f,) = feed(d, [obs(T0, key="k-alice")])
    assert f.data["idle_days"] == 40.0
    assert last_used == {"k-old": T0 - DAY, "k-alice": T0 - 40 * DAY}  # not written to


def test_dormant_unknown_key_is_learned_from_its_use() -> None:
    d = make("dormant", dormant="30d")
    assert feed(d, [obs(T0, key="k-ghost", principal="alice")]) == []
    assert len(feed(d, [obs(T0 + 31 * DAY, key="k-ghost", principal="alice")])) == 1


def test_dormant_ignores_refusals_which_do_not_count_as_use() -> None:
    d = make("dormant", dormant="30d")
    feed(d, [obs(T0, key="k-alice")])
    stream = [
        denied(T0 + 20 * DAY, "model.unknown", status=404, key="k-alice"),
        denied(T0 + 20 * DAY, "credential.bad_secret", key=None, presented="k-old"),
    ]
    assert feed(d, stream) == []
    # The refusal 20 days in did not reset the clock.
    assert len(feed(d, [obs(T0 + 31 * DAY, key="k-alice")])) == 1


# ── content ───────────────────────────────────────────────────────────────────────────────
def test_content_flag_of_this_rule_is_reported() -> None:
    d = make("content", level="high", rule_id="prompt-bad", patterns=["bad"])
    (f,) = feed(d, [obs(T0, flags=("other", "prompt-bad"), model="m7")])
    assert (f.subject_kind, f.subject_id, f.reason) == ("principal", "alice", "prompt.content")
    assert f.data["model"] == "m7" and f.severity is Severity.HIGH


def test_content_ignores_other_rules_and_refusals() -> None:
    d = make("content", rule_id="prompt-bad", patterns=["bad"])
    stream = [
        obs(T0, flags=("prompt-other",)),
        obs(T0),
        denied(T0, "model.unknown", flags=("prompt-bad",)),
        obs(T0, name="request.completed", flags=("prompt-bad",)),
    ]
    assert feed(d, stream) == []


def test_content_without_a_principal() -> None:
    d = make("content", rule_id="prompt-bad", patterns=["bad"])
    (f,) = feed(d, [obs(T0, key=None, principal=None, flags=("prompt-bad",))])
    assert f.subject_id == "-"


# ── extraction ────────────────────────────────────────────────────────────────────────────
EXTRACTION: dict[str, Any] = {"bucket": 60, "calls_per_bucket": 5, "sustained_buckets": 3}


def _buckets(counts: Sequence[int], *, key: str = "k-alice", model: str = "m1") -> list[Obs]:
    return [
        obs(T0 + b * 60 + i, key=key, model=model) for b, n in enumerate(counts) for i in range(n)
    ]


def test_extraction_sustained() -> None:
    d = make("extraction", level="high", **EXTRACTION)
    assert feed(d, _buckets([5, 5, 4])) == []
    d = make("extraction", level="high", **EXTRACTION)
    stream = _buckets([5, 5, 5])
    assert feed(d, stream[:-1]) == []
    (f,) = feed(d, stream[-1:])
    assert (f.subject_kind, f.subject_id, f.reason) == ("principal", "alice", "model.extraction")
    assert f.data == {"model": "m1", "buckets": 3, "calls_per_bucket": 5}


def test_extraction_once_per_bucket_while_it_lasts() -> None:
    d = make("extraction", **EXTRACTION)
    found = feed(d, _buckets([9, 9, 9, 9, 9]))
    assert [f.data["buckets"] for f in found] == [3, 4, 5]


def test_extraction_broken_by_a_short_bucket() -> None:
    d = make("extraction", **EXTRACTION)
    assert feed(d, _buckets([5, 5, 4, 5, 5])) == []


def test_extraction_broken_by_an_empty_bucket() -> None:
    d = make("extraction", **EXTRACTION)
    assert feed(d, _buckets([5, 5, 0, 5, 5])) == []
    # ... and counting starts again after the break.
    assert len(feed(d, [obs(T0 + 5 * 60 + i) for i in range(5)])) == 1


def test_extraction_is_per_model() -> None:
    d = make("extraction", **EXTRACTION)
    stream = sorted(
        _buckets([3, 3, 3, 3], model="m1") + _buckets([3, 3, 3, 3], model="m2"),
        key=lambda o: o.at,
    )
    assert feed(d, stream) == []


def test_extraction_by_vendor_adds_up_its_people() -> None:
    stream = sorted(
        _buckets([3, 3, 3], key="k-vic") + _buckets([2, 2, 2], key="k-vera"), key=lambda o: o.at
    )
    assert feed(make("extraction", **EXTRACTION), stream) == []
    (f,) = feed(make("extraction", by="vendor", **EXTRACTION), stream)
    assert (f.subject_kind, f.subject_id) == ("vendor", "vend")


def test_extraction_ignores_calls_without_model_or_subject() -> None:
    d = make("extraction", by="vendor", **EXTRACTION)
    stream = [o for o in _buckets([5, 5, 5], model=None)]  # type: ignore[arg-type]
    stream += [obs(o.at, org=None) for o in _buckets([5, 5, 5])]
    stream += [denied(o.at, "model.unknown") for o in _buckets([5, 5, 5])]
    assert feed(d, stream) == []


def test_off_hours_learns_over_days_not_only_events() -> None:
    # 200 calls in the first morning are not a picture of someone's hours.
    d = make("off_hours", learning_events=20, learning_span=3 * DAY, min_share=0.05)
    assert feed(d, _office_hours(1, 200)) == []
    assert feed(d, [obs(_at_hour(1, 3))]) == []  # day 2: still learning
    feed(d, _office_hours(2, 10))
    assert len(feed(d, [obs(_at_hour(4, 3, 30))])) == 1  # day 5, learned: unusual


def test_off_hours_never_flags_a_service_account() -> None:
    import dataclasses

    service = dataclasses.replace(FACTS.principals["alice"], kind=PrincipalKind.SERVICE)
    facts = dataclasses.replace(
        FACTS, principals=MappingProxyType({**FACTS.principals, "alice": service})
    )
    d = make("off_hours", learning_events=20, learning_span=1, min_share=0.05)
    feed(d, _office_hours(2, 10), facts)
    assert feed(d, [obs(_at_hour(2, 3, 15))], facts) == []


# ── refusal_reason ───────────────────────────────────────────────────────────────────────
def test_refusal_reason_catches_a_named_reason_and_nothing_else() -> None:
    d = make("refusal_reason", level="high", reasons=["policy.error"])
    (f,) = feed(d, [obs(T0, name="request.denied", status=404, reasons=("policy.error",))])
    assert f.severity is Severity.HIGH and f.reason == "policy.error"
    assert f.subject_id == "alice" and f.data["reasons"] == ["policy.error"]
    # Other refusals, and allowed calls, are not it.
    assert feed(d, [obs(T0, name="request.denied", reasons=("clearance.level",))]) == []
    assert feed(d, [obs(T0, reasons=("policy.error",))]) == []
    # On the admin API as well.
    assert len(feed(d, [obs(T0, name="admin.denied", reasons=("policy.error",))])) == 1
