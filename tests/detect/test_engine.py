"""Tests for ``garrison.detect.engine``: deduplication, forgetting, what the engine reads —
and the built-in rules replayed over a week of simulated normal traffic (the false-positive
rate), then over the same week with a scripted attack in it (which must be found).
"""

from __future__ import annotations

import calendar
import ipaddress
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from garrison.detect.engine import DEDUP_WINDOW_S, DetectionEngine
from garrison.detect.observation import Finding, Obs, Severity
from garrison.detect.rules import load_rules, parse_rules
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
from garrison.gateway.content import scan
from garrison.store.snapshot import Snapshot

DAY = 86400.0
HOUR = 3600.0
# Monday 2 March 2026, 00:00 UTC.
T0 = float(calendar.timegm((2026, 3, 2, 0, 0, 0)))
BUILTIN = load_rules(None)


def finding(
    at: float, *, rule: str = "r", subject: str = "k-1", kind: str = "credential"
) -> Finding:
    return Finding(
        rule_id=rule,
        title="t",
        severity=Severity.MEDIUM,
        subject_kind=kind,
        subject_id=subject,
        reason="x",
        at=at,
    )


def call(at: float, name: str = "request.allowed", **kw: Any) -> Obs:
    kw.setdefault("principal_id", "p1")
    kw.setdefault("credential_id", "k-1")
    kw.setdefault("model", "m1")
    kw.setdefault("address", "10.0.0.1")
    return Obs(index=kw.pop("index", 0), name=name, at=at, **kw)


def tiny_facts(*credentials: Credential) -> Snapshot:
    return Snapshot(
        1,
        orgs=MappingProxyType({"corp": Org("corp", "Corp", OrgKind.INTERNAL)}),
        principals=MappingProxyType(
            {
                "p1": Principal(
                    "p1",
                    "p1",
                    "corp",
                    PrincipalKind.HUMAN,
                    Level.INTERNAL,
                    frozenset(),
                    Status.ACTIVE,
                )
            }
        ),
        credentials=MappingProxyType({c.id: c for c in credentials}),
        models=MappingProxyType({}),
    )


def key(kid: str, created_at: float, *, canary: bool = False, owner: str = "p1") -> Credential:
    return Credential(kid, owner, b"\x00" * 32, created_at, None, (), canary=canary)


# ── deduplication ─────────────────────────────────────────────────────────────────────────
def test_first_finding_is_a_new_alert_and_names_its_key() -> None:
    e = DetectionEngine(BUILTIN)
    v = e.judge(finding(T0, rule="key-multi-network", subject="k-9"))
    assert v.new and v.dedup_key == "key-multi-network|credential|k-9"
    assert v.finding.subject_id == "k-9"


def test_repeat_within_the_window_is_not_new() -> None:
    e = DetectionEngine(BUILTIN)
    assert e.judge(finding(T0)).new
    assert not e.judge(finding(T0 + 1)).new
    assert not e.judge(finding(T0 + 1 + DEDUP_WINDOW_S)).new  # exactly a window after the last


def test_repeat_after_the_window_is_new() -> None:
    e = DetectionEngine(BUILTIN)
    assert e.judge(finding(T0)).new
    assert e.judge(finding(T0 + DEDUP_WINDOW_S + 0.5)).new


def test_the_window_runs_from_the_latest_repeat() -> None:
    # An alert that keeps happening every 40 minutes is one alert, however long it lasts.
    e = DetectionEngine(BUILTIN)
    verdicts = [e.judge(finding(T0 + n * 2400)).new for n in range(20)]
    assert verdicts == [True] + [False] * 19


def test_rule_and_subject_are_deduplicated_separately() -> None:
    e = DetectionEngine(BUILTIN)
    assert e.judge(finding(T0, rule="a", subject="k-1")).new
    assert e.judge(finding(T0, rule="b", subject="k-1")).new
    assert e.judge(finding(T0, rule="a", subject="k-2")).new
    assert e.judge(finding(T0, rule="a", subject="k-1", kind="principal")).new
    assert not e.judge(finding(T0 + 5, rule="a", subject="k-1")).new


def test_a_late_finding_does_not_reopen_the_window() -> None:
    # Findings are not always judged in time order: after falling behind, the monitor
    # replays the dropped range from the log once the live queue is empty, so an older
    # finding can be judged after newer ones. It is a repeat; it must not pull the window
    # back, or a finding 50 minutes after the live alert is judged a new alert (a second
    # alert row, and its playbooks — locks, incidents — run a second time).
    e = DetectionEngine(BUILTIN)
    assert e.judge(finding(T0 + 10_000)).new  # live
    assert not e.judge(finding(T0 + 5_000)).new  # caught up from the log
    assert not e.judge(finding(T0 + 13_000)).new  # 50 minutes after the live alert


def test_forget_makes_the_next_finding_new() -> None:
    e = DetectionEngine(BUILTIN)
    v = e.judge(finding(T0))
    e.forget(v.dedup_key)
    assert e.judge(finding(T0 + 1)).new
    assert not e.judge(finding(T0 + 2)).new


def test_forget_only_that_alert_and_unknown_keys_are_fine() -> None:
    e = DetectionEngine(BUILTIN)
    a = e.judge(finding(T0, subject="k-1"))
    e.judge(finding(T0, subject="k-2"))
    e.forget(a.dedup_key)
    e.forget("never|seen|this")
    assert e.judge(finding(T0 + 1, subject="k-1")).new
    assert not e.judge(finding(T0 + 1, subject="k-2")).new


# ── what the engine reads ─────────────────────────────────────────────────────────────────
class Spy:
    def __init__(self) -> None:
        self.rule = BUILTIN.rules[0]
        self.seen: list[str] = []

    def observe(self, obs: Obs, facts: Snapshot) -> list[Finding]:
        self.seen.append(obs.name)
        return []


def test_non_request_events_are_counted_but_not_shown_to_detectors() -> None:
    e = DetectionEngine(BUILTIN)
    spy = Spy()
    e.detectors.append(spy)  # type: ignore[arg-type]
    facts = tiny_facts(key("k-canary", T0 - 400 * DAY, canary=True))
    names = ["gateway.started", "credential.created", "alert.raised", "lock.created"]
    for name in names:
        assert e.process(call(T0, name, credential_id="k-canary"), facts) == []
    found = e.process(call(T0, "request.denied", credential_id="k-canary"), facts)
    assert "canary-key-used" in {f.rule_id for f in found}
    # Admin API calls are read too: a canary used there is caught as well.
    found = e.process(call(T0 + 1, "admin.read", credential_id="k-canary"), facts)
    assert "canary-key-used" in {f.rule_id for f in found}
    assert spy.seen == ["request.denied", "admin.read"]
    assert e.processed == len(names) + 2


def test_processed_counts_every_event() -> None:
    e = DetectionEngine(BUILTIN)
    facts = tiny_facts(key("k-1", T0 - DAY))
    for i in range(7):
        e.process(call(T0 + i), facts)
    e.process(call(T0 + 8, "lock.created"), facts)
    assert e.processed == 8


def test_one_event_can_match_several_rules() -> None:
    # A canary planted long ago: its use is both a canary and a dormant key.
    e = DetectionEngine(BUILTIN)
    facts = tiny_facts(key("k-canary", T0 - 400 * DAY, canary=True))
    found = e.process(call(T0, credential_id="k-canary", index=3), facts)
    assert {f.rule_id for f in found} == {"canary-key-used", "key-dormant-used"}
    canary = next(f for f in found if f.rule_id == "canary-key-used")
    assert canary.severity is Severity.CRITICAL and canary.evidence == (3,)


def test_last_used_reaches_the_dormant_detector() -> None:
    facts = tiny_facts(key("k-1", T0 - 90 * DAY))
    cold = DetectionEngine(BUILTIN)
    assert [f.rule_id for f in cold.process(call(T0), facts)] == ["key-dormant-used"]
    warm = DetectionEngine(BUILTIN, last_used={"k-1": T0 - DAY})
    assert warm.process(call(T0), facts) == []


def test_one_detector_per_enabled_rule() -> None:
    text = """
rules:
  - {id: a, title: A, level: low, detector: canary}
  - {id: b, title: B, level: low, detector: canary, enabled: false}
  - {id: c, title: C, level: low, detector: dormant, dormant: 1d}
"""
    e = DetectionEngine(parse_rules(text))
    assert [d.rule.id for d in e.detectors] == ["a", "c"]
    facts = tiny_facts(key("k-canary", T0 - 2 * DAY, canary=True))
    found = e.process(call(T0, credential_id="k-canary"), facts)
    assert sorted(f.rule_id for f in found) == ["a", "c"]


def test_an_empty_rule_set_finds_nothing() -> None:
    e = DetectionEngine(parse_rules("rules: []"))
    facts = tiny_facts(key("k-canary", T0 - 400 * DAY, canary=True))
    assert e.process(call(T0, credential_id="k-canary"), facts) == []
    assert e.processed == 1


# ── a week of normal traffic ──────────────────────────────────────────────────────────────
MODELS = ("gpt-4o", "claude-sonnet", "llama-70b", "mistral-large", "text-embed-3")
TYPOS = {
    "gpt-4o": ("gpt4o", "gpt-4-o", "gpt-40"),
    "claude-sonnet": ("claude-sonet", "claude_sonnet"),
    "llama-70b": ("lama-70b", "llama-70B"),
    "mistral-large": ("mistral-larg",),
    "text-embed-3": ("text-embed3",),
}
# Ordinary prompts, some close to the content rules' wording without meaning it.
PROMPTS = (
    "Summarise the attached incident report in five bullet points.",
    "Please ignore the typo in my last message and answer the question.",
    "Show the system status page layout as an ASCII diagram.",
    "Write a unit test for the parser in the previous file.",
    "How do mRNA vaccines produce an immune response?",
    "Translate the following paragraph into French.",
    "Explain how our patch process handles a zero-day advisory.",
    "Repeat the key findings from the audit in plain language.",
    "What increases the lethality of a software bug in production systems?",
    "Draft a polite reply declining the meeting.",
)
CONTENT = tuple(BUILTIN.content_patterns())
FLAGS = {p: tuple(scan(CONTENT, {"messages": [{"role": "user", "content": p}]})) for p in PROMPTS}


@dataclass
class Actor:
    pid: str
    org: str
    key: str
    service: bool
    networks: list[Callable[[random.Random], str]]
    start_utc: float = 9.0  # usual start of the working day, hours after midnight UTC
    activity: float = 0.25  # chance of a call in an active minute (humans) / calls a minute
    models: tuple[str, ...] = ("gpt-4o",)
    remote_share: float = 0.0  # days worked from the second network


def v4(prefix: str) -> Callable[[random.Random], str]:
    return lambda rng: f"{prefix}.{rng.randint(2, 250)}"


def v6(prefix: str) -> Callable[[random.Random], str]:
    # A /64 with SLAAC privacy addresses: the interface id changes all the time.
    return lambda rng: (
        f"{prefix}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}"
    )


@dataclass
class World:
    facts: Snapshot
    actors: list[Actor]
    obs: list[Obs] = field(default_factory=list)


def build_world(rng: random.Random) -> World:
    actors: list[Actor] = []
    offices = ["10.20.1", "10.20.2", "10.20.3", "10.31.7"]
    # Internal people in four time zones (09:00 local in UTC).
    zones = (8.0, 9.0, 14.0, 1.0)
    for i in range(24):
        nets = [v4(offices[i % len(offices)])]
        remote = 0.0
        if i % 3 == 0:
            nets.append(v6(f"2001:db8:{100 + i:x}:1"))
            remote = 0.3
        elif i % 3 == 1:
            nets.append(v4(f"172.16.{40 + i}"))
            remote = 0.2
        actors.append(
            Actor(
                f"h{i:02d}",
                "corp",
                f"k-h{i:02d}",
                False,
                nets,
                start_utc=zones[i % len(zones)] + rng.uniform(-0.5, 0.5),
                activity=rng.uniform(0.12, 0.4),
                models=tuple(rng.sample(MODELS, rng.randint(1, 3))),
                remote_share=remote,
            )
        )
    # Internal services: round the clock, steady, from the data centre.
    dc = ["10.50.0", "10.50.1", "2001:db8:dc:1", "10.50.2"]
    for i in range(4):
        address_of = v6(dc[i]) if ":" in dc[i] else v4(dc[i])
        actors.append(
            Actor(
                f"svc{i}",
                "corp",
                f"k-svc{i}",
                True,
                [address_of],
                activity=rng.uniform(0.4, 1.0),
                models=(MODELS[i],),
            )
        )
    # Three vendors, three people each, from their own networks and time zones.
    for v, (net, zone) in enumerate([("203.0.113", 8.5), ("198.51.100", 13.0), ("192.0.2", 3.5)]):
        for j in range(3):
            actors.append(
                Actor(
                    f"v{v}p{j}",
                    f"vendor{v}",
                    f"k-v{v}p{j}",
                    False,
                    [v4(net)],
                    start_utc=zone + rng.uniform(-0.5, 0.5),
                    activity=rng.uniform(0.1, 0.3),
                    models=tuple(rng.sample(MODELS[:3], 2)),
                )
            )
        actors.append(
            Actor(
                f"v{v}svc",
                f"vendor{v}",
                f"k-v{v}svc",
                True,
                [v4(net)],
                activity=0.2,
                models=(MODELS[v],),
            )
        )

    orgs: dict[str, Org] = {"corp": Org("corp", "Corp", OrgKind.INTERNAL)}
    for v, net in enumerate(("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24")):
        terms = VendorTerms(
            sponsor_id="h00",
            contract_start=T0 - 90 * DAY,
            contract_end=T0 + 90 * DAY,
            networks=(ipaddress.ip_network(net),),
            seat_limit=10,
            ceiling_level=Level.RESTRICTED,
            ceiling_compartments=frozenset(),
            status=VendorStatus.ACTIVE,
        )
        orgs[f"vendor{v}"] = Org(f"vendor{v}", f"Vendor {v}", OrgKind.VENDOR, terms)
    principals = {
        a.pid: Principal(
            a.pid,
            a.pid,
            a.org,
            PrincipalKind.SERVICE if a.service else PrincipalKind.HUMAN,
            Level.RESTRICTED,
            frozenset(),
            Status.ACTIVE,
        )
        for a in actors
    }
    principals["decoy"] = Principal(
        "decoy",
        "backup-bot",
        "corp",
        PrincipalKind.SERVICE,
        Level.INTERNAL,
        frozenset(),
        Status.ACTIVE,
    )
    credentials = {a.key: key(a.key, T0 - rng.uniform(1, 20) * DAY, owner=a.pid) for a in actors}
    credentials["k-canary"] = key("k-canary", T0 - 200 * DAY, canary=True, owner="decoy")
    facts = Snapshot(
        1,
        orgs=MappingProxyType(orgs),
        principals=MappingProxyType(principals),
        credentials=MappingProxyType(credentials),
        models=MappingProxyType({}),
    )
    return World(facts, actors)


Row = tuple[float, str, dict[str, Any]]


def _calls(rng: random.Random, a: Actor, at: float, address: str) -> list[Row]:
    """One call: allowed and completed, or refused for a mistyped model name."""
    who = {"principal_id": a.pid, "credential_id": a.key, "org_id": a.org, "address": address}
    model = rng.choice(a.models)
    if not a.service and rng.random() < 0.012:
        typo = rng.choice(TYPOS[model])
        return [
            (
                at,
                "request.denied",
                {**who, "model": typo, "status": 404, "reasons": ("model.unknown",)},
            )
        ]
    prompt = rng.choice(PROMPTS)
    allowed = {**who, "model": model, "reasons": ("allowed",), "content_flags": FLAGS[prompt]}
    done = {
        **who,
        "model": model,
        "status": 200,
        "outcome": "ok",
        "tokens_in": rng.randint(30, 3000),
        "tokens_out": rng.randint(10, 1500),
    }
    return [
        (at, "request.allowed", allowed),
        (at + rng.uniform(0.3, 25.0), "request.completed", done),
    ]


def _human_day(rng: random.Random, a: Actor, day: int) -> list[Row]:
    weekend = day % 7 >= 5
    if weekend and rng.random() > 0.08:
        return []
    net = a.networks[1] if len(a.networks) > 1 and rng.random() < a.remote_share else a.networks[0]
    address = net(rng)  # one address for the day (DHCP lease, or a privacy address)
    start = T0 + day * DAY + (a.start_utc + rng.uniform(-0.4, 0.6)) * HOUR
    length = rng.uniform(1.5, 3.0) if weekend else rng.uniform(7.0, 8.5)
    lunch = start + rng.uniform(3.5, 4.5) * HOUR
    rows: list[Row] = []
    minute = 0
    while minute < length * 60:
        at = start + minute * 60
        if lunch <= at < lunch + 45 * 60:
            minute += 1
            continue
        if rng.random() < a.activity:
            for _ in range(1 + (rng.random() < 0.15)):
                if ":" in address and rng.random() < 0.05:
                    address = net(rng)  # a new privacy address, same /64
                rows += _calls(rng, a, at + rng.uniform(0, 59), address)
        minute += 1
    if rng.random() < 0.03:  # an old copy of the key, pasted by mistake
        rows.append(
            (
                start + rng.uniform(0, length) * HOUR,
                "request.denied",
                {
                    "address": address,
                    "status": 401,
                    "reasons": ("credential.bad_secret",),
                    "presented_key_id": a.key,
                },
            )
        )
    return rows


def _service_day(rng: random.Random, a: Actor, day: int) -> list[Row]:
    address = a.networks[0](rng)
    rows: list[Row] = []
    base = T0 + day * DAY
    for minute in range(1440):
        rate = a.activity * (1.0 + 0.3 * rng.uniform(-1, 1))
        n = int(rate) + (rng.random() < rate - int(rate))
        for _ in range(n):
            rows += _calls(rng, a, base + minute * 60 + rng.uniform(0, 59), address)
    return rows


def to_obs(rows: list[Row]) -> list[Obs]:
    rows = sorted(rows, key=lambda r: r[0])
    out = []
    for i, (at, name, f) in enumerate(rows):
        out.append(
            Obs(
                index=i,
                name=name,
                at=at,
                principal_id=f.get("principal_id"),
                credential_id=f.get("credential_id"),
                model=f.get("model"),
                org_id=f.get("org_id"),
                address=f.get("address"),
                status=f.get("status"),
                reasons=tuple(f.get("reasons", ())),
                tokens_in=f.get("tokens_in", 0),
                tokens_out=f.get("tokens_out", 0),
                presented_key_id=f.get("presented_key_id"),
                content_flags=tuple(f.get("content_flags", ())),
                outcome=f.get("outcome"),
            )
        )
    return out


def normal_traffic(seed: int = 20260302, days: int = 7) -> tuple[World, list[Row]]:
    """A week (Monday to Sunday) of ordinary use: 24 staff in four time zones, each working
    from an office network and some days from home (a second /24, or an IPv6 /64 with
    privacy addresses); 4 internal services round the clock; 3 vendors with 3 people and a
    service each, from their contracted networks. Steady volumes with noise, lunch breaks,
    the odd weekend session, ~1 % mistyped model names, the odd stale key pasted."""
    rng = random.Random(seed)
    world = build_world(rng)
    rows: list[Row] = []
    for a in world.actors:
        for day in range(days):
            rows += _service_day(rng, a, day) if a.service else _human_day(rng, a, day)
    return world, rows


def replay(world: World, observations: list[Obs]) -> tuple[list[Finding], int]:
    engine = DetectionEngine(BUILTIN)
    findings: list[Finding] = []
    alerts = 0
    for o in observations:
        for f in engine.process(o, world.facts):
            findings.append(f)
            alerts += engine.judge(f).new
    assert engine.processed == len(observations)
    return findings, alerts


@pytest.fixture(scope="module")
def week() -> tuple[World, list[Row]]:
    return normal_traffic()


# Measured with the seed above (100,226 events): 582 findings, 49 new alerts — 58.1 findings
# and 4.9 alerts per 10,000 events; none high or critical. 570 findings are off-hours (low):
# 487 of them from the seven round-the-clock services during their first day, when 200
# events (a few hours of a service's traffic) have "learned" only the hours seen so far;
# 83 from people starting early or finishing late. 12 are new-network (medium): people whose
# second network (home, or the office after working from home) first appears after learning.
FP_FINDINGS_PER_10K_MAX = 70.0
FP_ALERTS_PER_10K_MAX = 6.0


def test_normal_traffic_raises_nothing_serious(week: tuple[World, list[Row]]) -> None:
    """A week of normal traffic through the built-in rules: nothing high or critical.

    False-positive rate measured: 58.1 findings and 4.9 new alerts per 10,000 events, all
    low (off-hours) or medium (new-network). Asserted bound: at most 70 findings and 6 new
    alerts per 10,000 events.
    """
    world, rows = week
    observations = to_obs(rows)
    assert len(observations) > 90_000
    assert all(flags == () for flags in FLAGS.values())  # ordinary prompts are not flagged
    findings, alerts = replay(world, observations)
    serious = [f for f in findings if f.severity >= Severity.HIGH]
    assert serious == []
    per_10k = len(findings) * 10_000 / len(observations)
    alerts_per_10k = alerts * 10_000 / len(observations)
    by_rule = Counter(f.rule_id for f in findings)
    assert per_10k <= FP_FINDINGS_PER_10K_MAX, (per_10k, by_rule)
    assert alerts_per_10k <= FP_ALERTS_PER_10K_MAX, (alerts_per_10k, by_rule)
    assert set(by_rule) <= {"principal-off-hours", "principal-new-network"}, by_rule
    # The services' off-hours findings are a first-day artefact: once every hour has been
    # seen, a round-the-clock service is never off hours again.
    services = {a.pid for a in world.actors if a.service}
    late = [
        f
        for f in findings
        if f.rule_id == "principal-off-hours" and f.subject_id in services and f.at >= T0 + DAY
    ]
    assert late == []


def test_scripted_attack_in_normal_traffic_is_found(week: tuple[World, list[Row]]) -> None:
    world, rows = week
    rng = random.Random(7)
    victim = next(a for a in world.actors if a.pid == "h05")
    # Wednesday: the victim is at work; an attacker holding a copy of the key joins in from
    # another network a minute after one of the victim's calls.
    wednesday = [
        r
        for r in rows
        if r[2].get("credential_id") == victim.key and T0 + 2 * DAY <= r[0] < T0 + 3 * DAY
    ]
    assert len(wednesday) > 50
    start = sorted(r[0] for r in wednesday)[len(wednesday) // 2] + 60
    attack: list[Row] = []
    for n in range(15):
        attack += _calls(rng, victim, start + n * 20, f"185.220.101.{rng.randint(2, 250)}")
    # Thursday: someone tries the planted canary key, first with a guessed secret, then
    # with the real one (found in a leaked config file).
    thursday = T0 + 3 * DAY + 12 * HOUR
    attack.append(
        (
            thursday,
            "request.denied",
            {
                "address": "185.220.101.77",
                "status": 401,
                "reasons": ("credential.bad_secret",),
                "presented_key_id": "k-canary",
            },
        )
    )
    decoy = Actor("decoy", "corp", "k-canary", True, [v4("185.220.101")])
    attack += _calls(random.Random(1), decoy, thursday + 30, "185.220.101.77")

    observations = to_obs(rows + attack)
    findings, _ = replay(world, observations)
    serious = [f for f in findings if f.severity >= Severity.HIGH]

    shared = [f for f in serious if f.rule_id == "key-multi-network"]
    assert [f.subject_id for f in shared] == [victim.key]
    assert "185.220.101.0/24" in shared[0].data["networks"]
    assert shared[0].at == start

    canary = [f for f in serious if f.rule_id == "canary-key-used"]
    assert canary and {f.subject_id for f in canary} == {"k-canary"}
    assert canary[0].at == thursday and canary[0].severity is Severity.CRITICAL
    assert canary[0].principal_id is None  # caught before it authenticated

    # Nothing else serious: the attack is all that stands out.
    assert {f.subject_id for f in serious} == {victim.key, "k-canary"}
