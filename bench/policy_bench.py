"""Policy decisions: what one Cedar decision costs on a cache hit and on a miss.

    python bench/policy_bench.py [--principals 2000] [--models 50] [--rounds 3] [--json OUT]

A directory of P principals (a quarter of them vendors, random clearances and compartments)
and M models is turned into one ``PolicyEngine`` exactly as the gateway does per snapshot
(base policies plus a small organisation policy set). Then, per round:

* miss: ``decide`` on N distinct (principal, model, context) keys against an empty cache,
  each timed alone with ``perf_counter_ns`` — a real Cedar evaluation with pre-parsed
  policies, schema-validated entities and a fresh context;
* hit: ``decide`` again on the same keys (every one cached), each timed alone;
* the engine build (entities parse) and the policy compile, timed once per round.

Reports p50 / p99 per measurement, medians over rounds, against the targets (≤ 5 µs p50 on a
hit, ≤ 200 µs p50 on a miss). Bounded: a few seconds per round; stops by itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from garrison.domain import (
    AuthStyle,
    Level,
    Model,
    Principal,
    PrincipalKind,
    Status,
    UpstreamApi,
)
from garrison.policy.engine import CompiledPolicies, Context, PolicyEngine, build_entities

ORG_POLICIES = """
@id("contractors-office-hours")
forbid (principal, action, resource)
when { principal.vendor && (context.hour_utc < 6 || context.hour_utc >= 20) };

@id("services-no-critical")
forbid (principal, action, resource)
when { principal.kind == "service" && resource.level >= 3 };
"""
COMPARTMENTS = ["cyber", "bio", "chem", "nuclear"]
# Keys decided per round: enough for stable percentiles, a couple of seconds of Cedar time.
KEYS_PER_ROUND = 5_000


def _world(n_principals: int, n_models: int, rng: random.Random) -> tuple[Any, ...]:
    principals = []
    for i in range(n_principals):
        vendor = i % 4 == 0
        principals.append(
            Principal(
                id=f"prn_{i:016x}",
                name=f"user{i}",
                org_id="org_vendor" if vendor else "org_internal",
                kind=PrincipalKind.SERVICE if i % 10 == 0 else PrincipalKind.HUMAN,
                clearance=Level(rng.randrange(4)),
                compartments=frozenset(rng.sample(COMPARTMENTS, rng.randrange(3))),
                status=Status.ACTIVE,
            )
        )
    models = [
        Model(
            id=f"mdl_{i:016x}",
            name=f"model{i}",
            upstream_url="http://127.0.0.1:9/v1",
            upstream_model=f"m{i}",
            api=UpstreamApi.OPENAI,
            auth_style=AuthStyle.NONE,
            level=Level(i % 4),
            compartments=frozenset(rng.sample(COMPARTMENTS, i % 2)),
        )
        for i in range(n_models)
    ]
    orgs = {"org_internal": "internal", "org_vendor": "vendor"}
    return principals, models, orgs


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_round(n_principals: int, n_models: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    principals, models, orgs = _world(n_principals, n_models, rng)
    t0 = time.perf_counter()
    compiled = CompiledPolicies(ORG_POLICIES, version=1)
    compile_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    engine = PolicyEngine(
        compiled, build_entities(principals, models, orgs, frozenset({"org_vendor"}))
    )
    build_ms = (time.perf_counter() - t0) * 1000
    keys = []
    for _ in range(KEYS_PER_ROUND):
        p = rng.choice(principals)
        m = rng.choice(models)
        ctx = Context(
            vendor_ceiling_level=2,
            grant=rng.random() < 0.5,
            hour_utc=rng.randrange(24),
            weekday=rng.randrange(7),
        )
        keys.append((p, m, ctx))
    keys = list({(p.id, m.id, c): (p, m, c) for p, m, c in keys}.values())
    clock = time.perf_counter_ns
    miss = []
    for p, m, c in keys:
        t = clock()
        engine.decide(p, m, c)
        miss.append((clock() - t) / 1000)
    hit = []
    for p, m, c in keys:
        t = clock()
        engine.decide(p, m, c)
        hit.append((clock() - t) / 1000)
    # A hit as the gateway sees it: the context is built anew for every call (a new object,
    # hashed for the lookup), then looked up.
    built = []
    for p, m, c in keys:
        t = clock()
        fresh = Context(
            vendor_ceiling_level=c.vendor_ceiling_level,
            grant=c.grant,
            hour_utc=c.hour_utc,
            weekday=c.weekday,
        )
        engine.decide(p, m, fresh)
        built.append((clock() - t) / 1000)
    return {
        "keys": len(keys),
        "hit_with_context_p50_us": statistics.median(built),
        "miss_p50_us": statistics.median(miss),
        "miss_p99_us": _pct(miss, 0.99),
        "hit_p50_us": statistics.median(hit),
        "hit_p99_us": _pct(hit, 0.99),
        "compile_ms": compile_ms,
        "engine_build_ms": build_ms,
        "allowed_share": sum(engine.decide(p, m, c).allowed for p, m, c in keys) / len(keys),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--principals", type=int, default=2000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rounds = []
    for n in range(args.rounds):
        result = run_round(args.principals, args.models, seed=n)
        rounds.append(result)
        print(
            f"round {n + 1}: hit p50 {result['hit_p50_us']:.2f} µs p99 "
            f"{result['hit_p99_us']:.2f} µs | miss p50 {result['miss_p50_us']:.1f} µs p99 "
            f"{result['miss_p99_us']:.1f} µs | build {result['engine_build_ms']:.0f} ms, "
            f"compile {result['compile_ms']:.1f} ms ({result['keys']} keys)"
        )
    summary = {
        key: statistics.median(r[key] for r in rounds)
        for key in (
            "hit_p50_us",
            "hit_p99_us",
            "hit_with_context_p50_us",
            "miss_p50_us",
            "miss_p99_us",
            "engine_build_ms",
            "compile_ms",
        )
    }
    summary["hit_target_met"] = summary["hit_with_context_p50_us"] <= 5.0
    summary["miss_target_met"] = summary["miss_p50_us"] <= 200.0
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "principals": args.principals,
        "models": args.models,
        "rounds": rounds,
        "median": summary,
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
