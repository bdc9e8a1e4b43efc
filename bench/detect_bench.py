"""Detection engine: events per second through the built-in rules, and false positives on
a normal stream.

    python bench/detect_bench.py [--events 500000] [--rounds 3] [--json OUT] [--profile]

Method. A seeded generator builds a directory and a stream of audit events exactly as the
gateway writes them (``Call.event`` and ``_complete`` in ``gateway/app.py``):

* the directory (a ``Snapshot``): P principals (default 100) in one internal org and four
  vendor orgs (a quarter of the principals; each vendor active, in contract, with its own
  10.x /16); about one internal principal in nine is a service. Each principal has a home
  /24 (internal people on 10.x, services on 127.x, vendor people inside their vendor's
  network) and one key (some people two); two canary keys are planted and never used.
  Twelve models at four levels; critical ones require a justification;
* the traffic: people work weekdays in their own time zone (a start between 7:30 and
  10:00 local, 7–9.5 hours, about one day in twenty off, one in twelve running late), in
  sessions of 0.1–1.5 calls a minute separated by idle spells; services call around the
  clock (0.2–3 a minute, with a daily swing). Every call comes from the principal's home /24 (a
  different host on some days); about one internal person in ten also works from a shared
  office /24 on some whole days. A call is ``request.allowed`` (reasons, policies, stream,
  upstream model, level, body digest and size) followed, after its duration, by
  ``request.completed`` (status, outcome, tokens, bytes out, duration, time to first
  byte; ~3 % upstream errors, client disconnects or upstream 429s). About 1.5 % of calls are
  refused instead (``request.denied``: ``clearance.level`` with its forbid policy,
  ``model.unknown`` for a mistyped model, ``request.malformed``), a few are unauthenticated
  (``credential.bad_secret`` with the presented key id) and clients list models now and
  then (a bare ``request.completed``). Rates are fixed; the stream covers as much simulated
  time as N events need (7.5 days from a Monday for 500,000), in time order, cut at N.

Then, per round, on the same events and a fresh ``DetectionEngine(load_rules(None))``
started as the live service starts it (every key's last use before the stream, as
``Monitor.prime`` reads it from the log), single thread, garbage collector on (the stream
itself frozen out of its reach: the live service holds a few hundred events, not N):

* engine: ``Obs.from_event(index, event)`` + ``engine.process(obs, snapshot)`` + ``judge``
  on every finding, as ``Monitor._process`` does minus storing alerts (I/O, not the engine);
  events/s = N / wall time;
* split: the same N ``Obs.from_event`` alone (built and dropped), then ``process`` alone
  over built observations on another fresh engine.

Each round first waits (at most 10 s) for the machine to go nearly idle, and reports the
cores other processes used during its engine pass and its own CPU / wall share. After the
rounds, one pass per detector (each on its own fresh instance, over the observations the
engine would hand it) shows where the time goes. Medians over rounds, against the target
of 50,000 events/s on one core. False positives: every finding of the first round, per
10,000 events, by rule and severity, with the new alerts left after deduplication, and
per simulated day (the learning detectors start empty whenever the service starts, so the
first days show their warm-up). The stream is normal by construction, so any high or
critical finding is a failure; findings must be identical in every round.

``--profile`` runs one engine pass under cProfile and prints its hot spots instead of the
rounds. Bounded: fixed event counts, about 1.5–2 minutes for the defaults; stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import heapq
import io
import ipaddress
import math
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import CLK_TCK, machine_busy_ticks, wait_for_quiet
from garrison.audit.events import AuditEvent, EventName
from garrison.detect.engine import DetectionEngine
from garrison.detect.observation import Finding, Obs, Severity
from garrison.detect.rules import RuleSet, load_rules
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
    VendorStatus,
    VendorTerms,
)
from garrison.store.snapshot import Snapshot

TARGET_EVENTS_PER_S = 50_000
# Before each round, wait (at most this long) for the machine to go nearly idle.
QUIET_MAX_WAIT_S = 10.0
DAY = 86_400.0
# Monday 2 March 2026, 00:00 UTC: a fixed start keeps the stream (and its weekdays) the same.
STREAM_START = 1_772_409_600.0
VENDORS = 4
COMPARTMENTS = ("cyber", "bio", "chem", "nuclear")
# (name, upstream model, level, api) of the deployed models.
MODELS = (
    ("assistant", "mock-small", Level.INTERNAL, UpstreamApi.OPENAI),
    ("assistant-large", "mock-large", Level.INTERNAL, UpstreamApi.OPENAI),
    ("coder", "code-7b", Level.INTERNAL, UpstreamApi.OPENAI),
    ("embed", "embed-small", Level.PUBLIC, UpstreamApi.OPENAI),
    ("summarise", "mock-small", Level.PUBLIC, UpstreamApi.OPENAI),
    ("claude-internal", "claude-3-5", Level.INTERNAL, UpstreamApi.ANTHROPIC),
    ("research", "frontier-r1", Level.RESTRICTED, UpstreamApi.OPENAI),
    ("research-anthropic", "frontier-a1", Level.RESTRICTED, UpstreamApi.ANTHROPIC),
    ("redteam", "frontier-r1-raw", Level.RESTRICTED, UpstreamApi.OPENAI),
    ("bio-restricted", "frontier-bio", Level.CRITICAL, UpstreamApi.OPENAI),
    ("cyber-restricted", "frontier-cyber", Level.CRITICAL, UpstreamApi.OPENAI),
    ("frontier-preview", "frontier-next", Level.CRITICAL, UpstreamApi.ANTHROPIC),
)
ENDPOINT_OF = {UpstreamApi.OPENAI: "chat", UpstreamApi.ANTHROPIC: "messages"}
TYPOS = ("gpt-4", "assistant-larg", "claude-3-opus", "coder-v2", "research ", "llama3")


@dataclass
class Actor:
    principal: Principal
    keys: list[str]
    home: str  # the /24 prefix, e.g. "10.1.7."
    office: str | None  # a second /24 used on some whole days
    service: bool
    vendor: bool
    tz: float  # hours east of UTC
    usable: list[Model]  # models this principal is cleared for
    favourites: list[Model]
    above: list[Model]  # models above its clearance (a refused try now and then)
    rate: float  # calls per minute while active
    hosts: list[int] = field(default_factory=list)


@dataclass
class World:
    snapshot: Snapshot
    actors: list[Actor]
    last_used: dict[str, float]
    canaries: list[str]


def _id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_{rng.getrandbits(64):016x}"


def build_world(n_principals: int, rng: random.Random) -> World:
    now = STREAM_START
    models = {}
    for i, (name, upstream, level, api) in enumerate(MODELS):
        models[name] = Model(
            id=f"mdl_{i:016x}",
            name=name,
            upstream_url="http://127.0.0.1:9/v1",
            upstream_model=upstream,
            api=api,
            auth_style=AuthStyle.NONE,
            level=level,
            compartments=frozenset(),
            requires_justification=level is Level.CRITICAL,
        )
    orgs = {"org_internal": Org("org_internal", "Example Lab", OrgKind.INTERNAL)}
    vendor_nets = []
    for v in range(VENDORS):
        net = ipaddress.ip_network(f"10.{200 + v}.0.0/16")
        vendor_nets.append(net)
        org_id = f"org_vendor{v}"
        orgs[org_id] = Org(
            org_id,
            f"Vendor {v}",
            OrgKind.VENDOR,
            VendorTerms(
                sponsor_id="prn_sponsor",
                contract_start=now - 90 * DAY,
                contract_end=now + 180 * DAY,
                networks=(net,),
                seat_limit=1000,
                ceiling_level=Level.RESTRICTED,
                ceiling_compartments=frozenset(COMPARTMENTS[:2]),
                status=VendorStatus.ACTIVE,
                security_review_at=now - 100 * DAY,
                agreement_ref=f"MSA-{v}",
            ),
        )
    principals: dict[str, Principal] = {}
    credentials: dict[str, Credential] = {}
    actors: list[Actor] = []
    last_used: dict[str, float] = {}
    vendor_tz = [5.5, 1.0, -3.0, 2.0]
    for i in range(n_principals):
        vendor = i % 4 == 3
        service = not vendor and i % 9 == 0
        if vendor:
            v = i % VENDORS
            org_id = f"org_vendor{v}"
            home = f"10.{200 + v}.{(i // 4) % 250}."
            networks: tuple[Any, ...] = (vendor_nets[v],)
            clearance = Level(rng.choice((1, 1, 2)))
            tz = vendor_tz[v]
        else:
            org_id = "org_internal"
            home = f"127.{i // 250}.{i % 250}." if service else f"10.{1 + i // 250}.{i % 250}."
            networks = (ipaddress.ip_network(f"{home}0/24"),) if service else ()
            clearance = Level(rng.choice((1, 1, 2, 2, 3)))
            tz = rng.choice((0.0, 0.0, 1.0, -5.0))
        pid = _id(rng, "prn")
        principals[pid] = Principal(
            id=pid,
            name=f"svc{i}" if service else f"user{i}",
            org_id=org_id,
            kind=PrincipalKind.SERVICE if service else PrincipalKind.HUMAN,
            clearance=clearance,
            compartments=frozenset(rng.sample(COMPARTMENTS, rng.randrange(3))),
            status=Status.ACTIVE,
        )
        keys = []
        for _ in range(2 if (not service and rng.random() < 0.15) else 1):
            kid = f"{rng.getrandbits(64):016x}"
            created = now - rng.uniform(2, 400) * DAY
            credentials[kid] = Credential(
                id=kid,
                principal_id=pid,
                secret_hash=hashlib.sha256(kid.encode()).digest(),
                created_at=created,
                expires_at=None if not vendor else now + 180 * DAY,
                networks=networks,
            )
            keys.append(kid)
            # As Monitor.prime reads it from the log: each key's last use before the stream.
            last_used[kid] = max(created, now - rng.uniform(0.1, 3.0) * DAY)
        usable = [m for m in models.values() if m.level <= clearance]
        above = [m for m in models.values() if m.level > clearance]
        api_pref = [m for m in usable if m.level >= Level.INTERNAL] or usable
        favourites = rng.sample(api_pref, min(len(api_pref), rng.choice((1, 2, 3))))
        if service:
            favourites = [rng.choice(api_pref)]
            if rng.random() < 0.3:
                favourites = [models["embed"]]
        rate = rng.uniform(0.2, 3.0) if service else rng.uniform(0.1, 1.5)
        office = None
        if not vendor and not service and rng.random() < 0.1:
            office = f"10.0.{rng.randrange(4)}."
        actors.append(
            Actor(
                principal=principals[pid],
                keys=keys,
                home=home,
                office=office,
                service=service,
                vendor=vendor,
                tz=tz,
                usable=usable,
                favourites=favourites,
                above=above,
                rate=rate,
                hosts=[rng.randrange(2, 254) for _ in range(3)],
            )
        )
    canaries = []
    for n, owner in enumerate((actors[3], actors[1])):  # one vendor key, one internal key
        kid = f"c{n:01d}{rng.getrandbits(56):014x}"
        credentials[kid] = Credential(
            id=kid,
            principal_id=owner.principal.id,
            secret_hash=hashlib.sha256(kid.encode()).digest(),
            created_at=now - 30 * DAY,
            expires_at=None,
            networks=(),
            canary=True,
        )
        canaries.append(kid)
    snapshot = Snapshot(
        version=1,
        orgs=MappingProxyType(orgs),
        principals=MappingProxyType(principals),
        credentials=MappingProxyType(credentials),
        models=MappingProxyType(models),
    )
    return World(snapshot, actors, last_used, canaries)


# ── call times ────────────────────────────────────────────────────────────────────────────
def _person_times(a: Actor, start: float, end: float, rng: random.Random) -> list[float]:
    """Weekday working sessions in the person's own time zone."""
    out: list[float] = []
    day0 = math.floor((start + a.tz * 3600) / DAY) * DAY - a.tz * 3600  # local midnight, UTC
    day = day0
    while day < end:
        weekday = time.gmtime(day + a.tz * 3600 + 3600).tm_wday
        if weekday < 5 and rng.random() >= 0.05:
            t = day + rng.uniform(7.5, 10.0) * 3600
            stop = t + rng.uniform(7.0, 9.5) * 3600
            if rng.random() < 1 / 12:
                stop += rng.uniform(1.0, 3.0) * 3600
            while t < stop:
                session_end = min(stop, t + rng.uniform(10, 45) * 60)
                rate = a.rate * rng.uniform(0.5, 1.5) / 60
                t += rng.expovariate(rate)
                while t < session_end:
                    if start <= t < end:
                        out.append(t)
                    t += rng.expovariate(rate)
                t = session_end + rng.uniform(5, 60) * 60
        day += DAY
    return out


def _service_times(a: Actor, start: float, end: float, rng: random.Random) -> list[float]:
    """Around the clock, with a daily swing of ±40 % (thinned Poisson)."""
    out: list[float] = []
    peak = a.rate * 1.4 / 60
    phase = rng.uniform(0, 2 * math.pi)
    t = start + rng.expovariate(peak)
    while t < end:
        if rng.random() < (1 + 0.4 * math.sin(2 * math.pi * t / DAY + phase)) / 1.4:
            out.append(t)
        t += rng.expovariate(peak)
    return out


# ── events, as the gateway writes them ───────────────────────────────────────────────────
class Requests:
    """UUID-shaped request ids, as ``gateway.app._RequestIds`` makes them."""

    def __init__(self, rng: random.Random) -> None:
        import uuid

        self._uuid = uuid.UUID
        self._prefix = rng.getrandbits(64)
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return str(self._uuid(int=(self._prefix << 64) | self._n, version=4))


def _event(
    name: EventName,
    at: float,
    rid: str,
    *,
    principal_id: str | None,
    credential_id: str | None,
    model: str | None,
    common: dict[str, Any],
    **data: Any,
) -> AuditEvent:
    # Call.event: the event's own fields first, then endpoint, address, org, key, body.
    data.update(common)
    return AuditEvent(
        name,
        at=at,
        actor=principal_id,
        request_id=rid,
        principal_id=principal_id,
        credential_id=credential_id,
        model=model,
        data=data,
    )


def _calls_for(
    a: Actor, t: float, rng: random.Random, rid: str, day_office: bool
) -> list[tuple[float, AuditEvent]]:
    p = a.principal
    key = rng.choice(a.keys)
    prefix = a.office if day_office and a.office else a.home
    host = a.hosts[int(t // DAY) % len(a.hosts)]
    address = f"{prefix}{host}"
    roll = rng.random()
    if roll < 0.002:  # a client with a mistyped secret
        data = {
            "endpoint": "chat",
            "client_address": address,
            "org_id": None,
            "presented_key_id": key,
        }
        ev = _event(
            EventName.REQUEST_DENIED,
            t,
            rid,
            principal_id=None,
            credential_id=None,
            model=None,
            common=data,
            status=401,
            reasons=["credential.bad_secret"],
        )
        return [(t, ev)]
    if roll < 0.006:  # a client listing the models
        common: dict[str, Any] = {
            "endpoint": "models",
            "client_address": address,
            "org_id": p.org_id,
        }
        ev = _event(
            EventName.REQUEST_COMPLETED,
            t,
            rid,
            principal_id=p.id,
            credential_id=key,
            model=None,
            common=common,
            status=200,
            outcome="ok",
            listed=len(a.usable),
        )
        return [(t, ev)]
    model = rng.choice(a.favourites) if rng.random() < 0.9 else rng.choice(a.usable)
    above = rng.choice(a.above) if roll < 0.012 and a.above else None
    if above is not None:  # tries a model above its clearance
        model = above
    body_bytes = int(rng.lognormvariate(7.0, 1.2)) + 80
    common = {
        "endpoint": "embeddings" if model.name == "embed" else ENDPOINT_OF[model.api],
        "client_address": address,
        "org_id": p.org_id,
        "body_sha256": hashlib.sha256(rid.encode()).hexdigest(),
        "body_bytes": body_bytes,
    }
    ids = {"principal_id": p.id, "credential_id": key}
    if above is not None:
        ev = _event(
            EventName.REQUEST_DENIED,
            t,
            rid,
            **ids,
            model=above.name,
            common=common,
            status=404,
            reasons=["clearance.level"],
            policies=["forbid-clearance-level"],
        )
        return [(t, ev)]
    if roll < 0.017:
        ev = _event(
            EventName.REQUEST_DENIED,
            t,
            rid,
            **ids,
            model=rng.choice(TYPOS),
            common=common,
            status=404,
            reasons=["model.unknown"],
        )
        return [(t, ev)]
    if roll < 0.019:
        ev = _event(
            EventName.REQUEST_DENIED,
            t,
            rid,
            **ids,
            model=None,
            common=common,
            status=400,
            reasons=["request.malformed"],
        )
        return [(t, ev)]
    stream = common["endpoint"] != "embeddings" and not a.service and rng.random() < 0.6
    extra: dict[str, Any] = {}
    if model.requires_justification:
        extra["justification"] = f"ticket RISK-{rng.randrange(1000, 9999)}: evaluation run"
    allowed = _event(
        EventName.REQUEST_ALLOWED,
        t,
        rid,
        **ids,
        model=model.name,
        common=common,
        reasons=["allowed"],
        policies=["permit-dominance"],
        stream=stream,
        upstream_model=model.upstream_model,
        level=model.level.label,
        **extra,
    )
    duration = (
        rng.lognormvariate(-1.6, 0.6)
        if common["endpoint"] == "embeddings"
        else rng.lognormvariate(1.5, 0.8)
    )
    done = t + 0.005 + duration
    tokens_in = max(1, body_bytes // 4)
    outcome_roll = rng.random()
    if outcome_roll < 0.97:
        status, outcome = 200, "ok"
        tokens_out = 0 if common["endpoint"] == "embeddings" else int(rng.uniform(20, 900))
        usage: tuple[int | None, int | None] = (tokens_in, tokens_out)
        bytes_out = 200 + tokens_out * 5
        ttfb = round(min(duration, rng.uniform(0.05, 0.6)) * 1000, 3)
    elif outcome_roll < 0.985:
        status, outcome, usage, bytes_out, ttfb = 502, "upstream_error", (None, None), 0, None
    elif outcome_roll < 0.995:
        status, outcome = 499, "client_closed"
        usage = (tokens_in, int(rng.uniform(0, 200))) if stream else (None, None)
        bytes_out = 0 if usage[1] is None else usage[1] * 5
        ttfb = None
    else:
        status, outcome, usage, bytes_out, ttfb = 429, "upstream_429", (None, None), 0, None
    completed = _event(
        EventName.REQUEST_COMPLETED,
        done,
        rid,
        **ids,
        model=model.name,
        common=dict(common),
        status=status,
        outcome=outcome,
        tokens_in=usage[0],
        tokens_out=usage[1],
        bytes_out=bytes_out,
        duration_ms=round((done - t) * 1000, 3),
        ttfb_ms=ttfb,
    )
    return [(t, allowed), (done, completed)]


def _expected_calls_per_day(actors: list[Actor]) -> float:
    total = 0.0
    for a in actors:
        if a.service:
            total += a.rate * 1440
        else:  # ~8.3 h a day, ~60 % of it in sessions, 5 days in 7, 95 % present
            total += a.rate * 60 * 8.3 * 0.6 * (5 / 7) * 0.95
    return total


def build_stream(world: World, n_events: int, seed: int) -> tuple[list[AuditEvent], float]:
    """``n_events`` events in time order, and the simulated seconds they span."""
    per_day = _expected_calls_per_day(world.actors) * 1.97
    span = n_events / per_day * DAY * 1.3
    while True:
        rng = random.Random(seed * 7919 + int(span))
        end = STREAM_START + span
        requests = Requests(rng)
        lists = []
        for a in world.actors:
            times = (
                _service_times(a, STREAM_START, end, rng)
                if a.service
                else _person_times(a, STREAM_START, end, rng)
            )
            # Whole days at the office for the people who have one.
            office_days = {d for d in range(int(span // DAY) + 2) if rng.random() < 0.4}
            calls = []
            for t in times:
                # The person's own (local) day: a working day never spans local midnight.
                office = int((t + a.tz * 3600 - STREAM_START) // DAY) in office_days
                calls.extend(_calls_for(a, t, rng, requests(), office))
            calls.sort(key=lambda c: c[0])
            lists.append(calls)
        merged = [ev for _, ev in heapq.merge(*lists, key=lambda c: c[0])]
        if len(merged) >= n_events:
            events = merged[:n_events]
            return events, events[-1].at - STREAM_START
        span *= 1.5


# ── the code measured ───────────────────────────────────────────────────────────────────────────
REPO_ROOT = Path(__file__).resolve().parent.parent


def source_state() -> dict[str, Any]:
    """The commit, uncommitted changes under ``src/``, and a digest of the detection code as
    this process imported it (modules load once: a change on disk mid-run is not measured)."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
            if out.returncode == 0:
                return out.stdout.strip()
        return ""

    digest = hashlib.sha256()
    package = Path(sys.modules[DetectionEngine.__module__].__file__ or ".").parent
    for path in sorted([*package.glob("*.py"), *package.glob("*.yaml")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    dirty = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "src_dirty": dirty,
        "detect_sha256": digest.hexdigest()[:16],
    }


# ── measurement ───────────────────────────────────────────────────────────────────────────
def _engine(ruleset: RuleSet, world: World) -> DetectionEngine:
    return DetectionEngine(ruleset, last_used=world.last_used)


def run_engine(
    events: list[AuditEvent], ruleset: RuleSet, world: World
) -> tuple[float, float, float, list[Finding], list[bool]]:
    """The live path minus alert storage: Obs.from_event + process + judge per finding."""
    engine = _engine(ruleset, world)
    facts = world.snapshot
    process = engine.process
    judge = engine.judge
    from_event = Obs.from_event
    findings: list[Finding] = []
    fresh: list[bool] = []  # per finding: a new alert after deduplication
    gc.collect()
    c0 = time.process_time()
    busy0 = machine_busy_ticks()
    t0 = time.perf_counter()
    for index, event in enumerate(events):
        found = process(from_event(index, event), facts)
        if found:
            for finding in found:
                fresh.append(judge(finding).new)
            findings.extend(found)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    other = ((machine_busy_ticks() - busy0) / CLK_TCK - cpu) / wall
    return wall, cpu, other, findings, fresh


def run_split(
    events: list[AuditEvent], ruleset: RuleSet, world: World
) -> tuple[float, float, list[Obs]]:
    from_event = Obs.from_event
    gc.collect()
    t0 = time.perf_counter()
    for index, event in enumerate(events):
        from_event(index, event)  # built and dropped, as in the live loop
    obs_wall = time.perf_counter() - t0
    obs = [from_event(index, event) for index, event in enumerate(events)]
    # Held only by the benchmark: kept out of the collector's way, like the events.
    gc.freeze()
    engine = _engine(ruleset, world)
    facts = world.snapshot
    process = engine.process
    t0 = time.perf_counter()
    for o in obs:
        process(o, facts)
    process_wall = time.perf_counter() - t0
    return obs_wall, process_wall, obs


def per_detector(obs: list[Obs], ruleset: RuleSet, world: World) -> list[dict[str, Any]]:
    """Each detector alone, on a fresh instance, over the observations the engine passes it."""
    engine = _engine(ruleset, world)
    facts = world.snapshot
    requests = [o for o in obs if o.name.startswith("request.")]
    out = []
    for detector in engine.detectors:
        observe = detector.observe
        gc.collect()
        t0 = time.perf_counter()
        for o in requests:
            observe(o, facts)
        wall = time.perf_counter() - t0
        out.append(
            {
                "rule": detector.rule.id,
                "detector": detector.rule.detector,
                "us_per_event": wall / len(obs) * 1e6,
            }
        )
    return out


def profile(events: list[AuditEvent], ruleset: RuleSet, world: World, top: int = 30) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_engine(events, ruleset, world)
    profiler.disable()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def fp_report(
    findings: list[Finding], fresh: list[bool], events: list[AuditEvent]
) -> dict[str, Any]:
    n = len(events)
    new_alerts = Counter(f.rule_id for f, new in zip(findings, fresh, strict=True) if new)
    by_rule: dict[tuple[str, str], dict[str, Any]] = {}
    subjects: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in findings:
        k = (f.rule_id, f.severity.label)
        row = by_rule.setdefault(k, {"rule": f.rule_id, "severity": f.severity.label, "n": 0})
        row["n"] += 1
        subjects[k].add(f.subject_id)
    rows = []
    for k, row in sorted(by_rule.items(), key=lambda kv: -kv[1]["n"]):
        row["per_10k_events"] = row["n"] / n * 10_000
        row["subjects"] = len(subjects[k])
        row["new_alerts"] = new_alerts[k[0]]
        rows.append(row)
    severe = [f for f in findings if f.severity >= Severity.HIGH]
    # Per simulated day (from the stream's start): the learning detectors start empty
    # whenever the service starts, so the first days show their warm-up.
    day_events = Counter(int((e.at - STREAM_START) // DAY) + 1 for e in events)
    day_findings: dict[int, Counter[str]] = defaultdict(Counter)
    day_new: Counter[int] = Counter()
    for f, new in zip(findings, fresh, strict=True):
        day = int((f.at - STREAM_START) // DAY) + 1
        day_findings[day][f"{f.rule_id} ({f.severity.label})"] += 1
        day_new[day] += new
    days = [
        {
            "day": day,
            "weekday": time.strftime("%a", time.gmtime(STREAM_START + (day - 1) * DAY)),
            "events": count,
            "findings": dict(day_findings[day]),
            "new_alerts": day_new[day],
            "per_10k_events": sum(day_findings[day].values()) / count * 10_000,
        }
        for day, count in sorted(day_events.items())
    ]
    by_severity = Counter(f.severity.label for f in findings)
    return {
        "findings": len(findings),
        "per_10k_events": len(findings) / n * 10_000,
        "by_severity_per_10k": {s: c / n * 10_000 for s, c in sorted(by_severity.items())},
        "by_rule": rows,
        "by_day": days,
        "high_or_critical": len(severe),
        "high_or_critical_examples": [
            {
                "rule": f.rule_id,
                "subject": f"{f.subject_kind}:{f.subject_id}",
                "reason": f.reason,
                "at": f.at,
                "data": f.data,
            }
            for f in severe[:5]
        ],
    }


def _stream_stats(events: list[AuditEvent], world: World, span: float) -> dict[str, Any]:
    names = Counter(e.name.value for e in events)
    reasons = Counter(e.data["reasons"][0] for e in events if e.name is EventName.REQUEST_DENIED)
    return {
        "events": len(events),
        "simulated_hours": span / 3600,
        "principals": len(world.actors),
        "services": sum(a.service for a in world.actors),
        "vendor_principals": sum(a.vendor for a in world.actors),
        "credentials": len(world.snapshot.credentials),
        "canaries": len(world.canaries),
        "models": len(world.snapshot.models),
        "names": dict(names),
        "denied_reasons": dict(reasons),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--principals", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--profile", action="store_true", help="one engine pass under cProfile, no rounds"
    )
    args = parser.parse_args()
    if args.events < 1000 or args.events > 5_000_000:
        parser.error("--events between 1,000 and 5,000,000")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds between 1 and 10")
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    source = source_state()
    print(
        f"machine: {machine['cpus']} cpus, {machine['implementation']} {machine['python']}, "
        f"{machine['platform']}"
    )
    dirty = f", {len(source['src_dirty'])} uncommitted change(s) in src/" * bool(
        source["src_dirty"]
    )
    print(f"code: commit {source['commit']}{dirty}, detect/ sha256 {source['detect_sha256']}")
    t0 = time.perf_counter()
    world = build_world(args.principals, random.Random(args.seed))
    events, span = build_stream(world, args.events, args.seed)
    stream = _stream_stats(events, world, span)
    print(
        f"stream: {len(events):,} events over {span / 3600:.1f} simulated hours, "
        f"{stream['principals']} principals ({stream['services']} services, "
        f"{stream['vendor_principals']} vendor people), {stream['credentials']} keys "
        f"({stream['canaries']} canaries, unused), built in {time.perf_counter() - t0:.1f} s"
    )
    print(f"  {stream['names']}; denied: {stream['denied_reasons']}")
    # The live service holds a few hundred events at a time, not the whole stream: the
    # stream is moved out of the collector's reach (the detectors' own state is not).
    gc.collect()
    gc.freeze()
    ruleset = load_rules(None)
    print(f"rules: {ruleset.source}, {len(ruleset.rules)} rules")
    if args.profile:
        print(profile(events, ruleset, world))
        return

    rounds = []
    reference: list[tuple[str, str, float]] | None = None
    fp: dict[str, Any] = {}
    for n in range(args.rounds):
        quiet = wait_for_quiet(max_wait_s=QUIET_MAX_WAIT_S)
        wall, cpu, other, findings, fresh = run_engine(events, ruleset, world)
        obs_wall, process_wall, obs = run_split(events, ruleset, world)
        signature = [(f.rule_id, f.subject_id, f.at) for f in findings]
        if reference is None:
            reference = signature
            fp = fp_report(findings, fresh, events)
        elif signature != reference:
            raise SystemExit("findings differ between rounds: the engine is not deterministic")
        result = {
            "events_per_s": len(events) / wall,
            "us_per_event": wall / len(events) * 1e6,
            # Below 1: the process waited for the CPU (other load on the machine).
            "cpu_share": cpu / wall,
            # Cores busy outside this process during the engine pass, and just before it.
            "other_load_cores": max(0.0, other),
            "busy_cores_before": quiet,
            "obs_us_per_event": obs_wall / len(events) * 1e6,
            "process_us_per_event": process_wall / len(events) * 1e6,
            "findings": len(findings),
        }
        rounds.append(result)
        print(
            f"round {n + 1}: {result['events_per_s']:,.0f} events/s "
            f"({result['us_per_event']:.2f} µs/event; split: Obs.from_event "
            f"{result['obs_us_per_event']:.2f} µs + process {result['process_us_per_event']:.2f}"
            f" µs) | cpu/wall {result['cpu_share']:.2f}, other load "
            f"{result['other_load_cores']:.2f} cores"
            f" | {len(findings)} findings"
        )
        if n < args.rounds - 1:
            del obs
    detectors = per_detector(obs, ruleset, world)
    del obs
    summary: dict[str, Any] = {
        key: statistics.median(r[key] for r in rounds)
        for key in ("events_per_s", "us_per_event", "obs_us_per_event", "process_us_per_event")
    }
    summary["target_events_per_s"] = TARGET_EVENTS_PER_S
    summary["target_met"] = summary["events_per_s"] >= TARGET_EVENTS_PER_S
    summary["no_high_or_critical"] = fp["high_or_critical"] == 0

    print("\nper detector (µs per event of the stream, each alone):")
    for d in sorted(detectors, key=lambda d: -d["us_per_event"]):
        print(f"  {d['rule']:<30} {d['detector']:<17} {d['us_per_event']:6.2f}")
    print(
        f"\nfalse positives on the normal stream: {fp['findings']} findings, "
        f"{fp['per_10k_events']:.2f} per 10,000 events"
    )
    for row in fp["by_rule"]:
        print(
            f"  {row['rule']:<30} {row['severity']:<8} {row['n']:>6}  "
            f"{row['per_10k_events']:7.3f}/10k  ({row['subjects']} subjects, "
            f"{row['new_alerts']} new alerts after dedup)"
        )
    print("  by simulated day (UTC, from the stream's start):")
    for d in fp["by_day"]:
        found = ", ".join(f"{k} {v}" for k, v in sorted(d["findings"].items())) or "none"
        print(
            f"    day {d['day']} ({d['weekday']}): {d['events']:>7,} events, "
            f"{d['per_10k_events']:6.2f}/10k, {d['new_alerts']:>3} new alerts: {found}"
        )
    if fp["high_or_critical"]:
        print(f"  FAILED: {fp['high_or_critical']} high/critical findings on normal traffic:")
        for ex in fp["high_or_critical_examples"]:
            print(f"    {ex}")
    else:
        print("  no high or critical finding (target: none): met")
    verdict = "met" if summary["target_met"] else "MISSED"
    print(
        f"\nengine: {summary['events_per_s']:,.0f} events/s median of {args.rounds} "
        f"({summary['us_per_event']:.2f} µs/event: Obs {summary['obs_us_per_event']:.2f} + "
        f"process {summary['process_us_per_event']:.2f}) against ≥ "
        f"{TARGET_EVENTS_PER_S:,} events/s on one core: {verdict}"
    )
    after = source_state()
    if (after["commit"], after["detect_sha256"]) != (source["commit"], source["detect_sha256"]):
        print(
            f"WARNING: the commit or the detection code changed during the run "
            f"({source['commit']} {source['detect_sha256']} -> {after['commit']} "
            f"{after['detect_sha256']}); this run measured the code as it was when it started"
        )
    report: dict[str, Any] = {
        "machine": machine,
        "source": source,
        "source_after": after,
        "stream": stream,
        "rules": [r.id for r in ruleset.rules],
        "rounds": rounds,
        "median": summary,
        "per_detector": detectors,
        "false_positives": fp,
    }
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
