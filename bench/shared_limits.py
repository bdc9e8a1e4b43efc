"""Shared limits in Redis: what one admission costs with and without them.

    python bench/shared_limits.py [--redis redis://127.0.0.1:6379/0] [--calls 2000]
                                  [--rounds 3] [--json OUT]

Two parts, each bounded (a few seconds a round), on a key prefix of its own that is deleted
at the end:

* admission alone: this process's limits (``Admission.enter`` + ``CallRate.take`` + the
  ticket's release) against the shared admission (``RedisLimits.enter``: one script, one
  round trip, then the lease's release, queued and sent in batches by a background task),
  with and without a DPoP replay entry; one at a time (the latency a call waits) and 32 at
  once (CPU of this process per admission: ``time.process_time``, the Redis server's own CPU
  not included);
* end to end: a gateway with a mock upstream, sequential chat calls over one kept-alive
  connection, rounds alternating between a gateway without Redis and one with it (same
  database, same directory) in short batches: the median and p99 of the whole call as the
  client sees it; the difference of the medians is the latency the shared limits add.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import redis

from garrison.bootstrap import init, open_directory
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi
from garrison.gateway.admission_limits import Admission
from garrison.gateway.limits import GatewayLimits
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway
from garrison.shared.redis_limits import RedisLimits
from garrison.shared.redis_link import RedisLink
from garrison.shared.verdicts import ProofEntry, SharedVerdict

DEFAULT_CALLS = 2000
CONCURRENCY = 32
LIMITS = GatewayLimits()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples_us: list[float]) -> dict[str, float]:
    return {
        "median_us": round(statistics.median(samples_us), 1),
        "p99_us": round(pct(samples_us, 0.99), 1),
    }


# ── admission alone ───────────────────────────────────────────────────────────────────────
def local_admission(calls: int) -> dict[str, float]:
    admission = Admission()
    samples = []
    for n in range(calls):
        start = time.perf_counter_ns()
        ticket = admission.enter(LIMITS, f"key{n % 50}", f"p{n % 10}")
        admission.rate.take(f"p{n % 10}", LIMITS.max_calls_per_minute_per_principal, n / 1e3)
        ticket.release()
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return summary(samples)


async def shared_admission(url: str, prefix: str, calls: int, proof: bool) -> dict[str, Any]:
    limits = RedisLimits(RedisLink(url), prefix=prefix)
    limits.start()
    caps = {
        "per_credential": LIMITS.max_concurrent_per_credential,
        "per_principal": LIMITS.max_concurrent_per_principal,
        "per_minute": LIMITS.max_calls_per_minute_per_principal,
    }

    async def one(n: int) -> float:
        entry = ProofEntry(f"jkt:{uuid.uuid4().hex}", 61.0, f"p{n % 10}", 10**6) if proof else None
        start = time.perf_counter_ns()
        answer = await limits.enter(f"key{n % 50}", f"p{n % 10}", proof=entry, **caps)
        elapsed = (time.perf_counter_ns() - start) / 1e3
        assert answer.verdict is SharedVerdict.ADMITTED, answer
        assert answer.lease is not None
        answer.lease.release()
        return elapsed

    try:
        for n in range(50):  # warm: connections made, the script loaded
            await one(n)
        sequential = [await one(n) for n in range(calls)]
        await limits.flush()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        sem = asyncio.Semaphore(CONCURRENCY)

        async def bounded(n: int) -> float:
            async with sem:
                return await one(n)

        await asyncio.gather(*(bounded(n) for n in range(calls)))
        await limits.flush()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await limits.close()
    return {
        **summary(sequential),
        f"c{CONCURRENCY}_cpu_us_per_admission": round(cpu / calls * 1e6, 1),
        f"c{CONCURRENCY}_admissions_per_s": round(calls / wall),
    }


# ── end to end ────────────────────────────────────────────────────────────────────────────
async def end_to_end(url: str, prefix: str, calls: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        done = init(Path(tmp) / "data")
        mock = MockUpstream(MockConfig(expected_api_key="sk-up"))
        upstream = await mock.start("127.0.0.1", 0)
        directory = open_directory(done.settings, actor="bench")
        now = time.time()
        directory.create_principal(
            "bench", org="internal", kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=now
        )
        directory.create_model(
            "assistant",
            upstream_model="mock-small",
            api=UpstreamApi.OPENAI,
            level=Level.INTERNAL,
            upstream_url=f"http://127.0.0.1:{upstream}/v1",
            auth_style=AuthStyle.BEARER,
            upstream_key="sk-up",
            now=now,
        )
        key = directory.create_key("bench", now=now).key.token.reveal()
        directory.engine.dispose()
        base = Settings(
            database_url=done.settings.database_url,
            key_dir=done.settings.key_dir,
            port=0,
            detect_enabled=False,
        )
        plain = Gateway(base)
        shared = Gateway(dataclasses.replace(base, redis_url=url, redis_prefix=prefix))
        await plain.start()
        await shared.start()
        body = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {key}"}
        results: dict[str, list[float]] = {"without_redis": [], "with_redis": []}
        try:
            async with aiohttp.ClientSession() as session:

                async def run(gateway: Gateway, n: int) -> list[float]:
                    target = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
                    out = []
                    for _ in range(n):
                        start = time.perf_counter_ns()
                        async with session.post(target, json=body, headers=headers) as resp:
                            await resp.read()
                            assert resp.status == 200, resp.status
                        out.append((time.perf_counter_ns() - start) / 1e3)
                    return out

                await run(plain, 100)
                await run(shared, 100)
                # Short alternating batches: a noisy neighbour hits both sides alike.
                batch = max(10, calls // 40)
                for _ in range(rounds * 20):
                    results["without_redis"] += await run(plain, batch)
                    results["with_redis"] += await run(shared, batch)
        finally:
            await shared.stop()
            await plain.stop()
            await mock.stop()
    out: dict[str, Any] = {name: summary(values) for name, values in results.items()}
    out["added_median_us"] = round(
        out["with_redis"]["median_us"] - out["without_redis"]["median_us"], 1
    )
    return out


def clean(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"garrison-bench-{uuid.uuid4().hex[:8]}"
    try:
        report: dict[str, Any] = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "calls": args.calls,
            "rounds": args.rounds,
        }
        rounds: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            rounds.append(
                {
                    "local": local_admission(args.calls),
                    "shared": await shared_admission(args.redis, prefix, args.calls, False),
                    "shared_with_proof": await shared_admission(
                        args.redis, prefix, args.calls, True
                    ),
                }
            )
        report["admission"] = {
            name: {
                metric: statistics.median(r[name][metric] for r in rounds)
                for metric in rounds[0][name]
            }
            for name in rounds[0]
        }
        report["end_to_end"] = await end_to_end(args.redis, prefix, args.calls, args.rounds)
        return report
    finally:
        clean(args.redis, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
