"""Propagation: from a directory write to enforcement on every gateway process.

    python bench/propagation_bench.py [--rounds 40] [--gateways 2] [--json OUT]

Two (or more) ``garrison serve`` processes share one SQLite database; a mock upstream sits
behind them. Each round creates a fresh key (set-up, written directly), checks it works on
every gateway, then revokes it (or suspends the vendor, every other round) through the admin
API of the first gateway — the call the CLI makes — and polls every gateway every
millisecond with the key until each answers 401. The figure per round and gateway is the
time from sending the admin call to the first refusal; the first gateway (the one that took
the write) and the others are reported apart.
Everything runs on 127.0.0.1, is bounded in rounds and time, and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.serve_processes import spawn_mock_upstream, spawn_replica, stop_processes

from bench.loadgen import free_port, wait_url
from garrison.bootstrap import enroll_locally, init, open_directory
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi, VendorStatus

# Longest wait for one refusal before the round counts as failed.
ROUND_TIMEOUT_S = 5.0
# Poll interval while waiting for the refusal (the measurement's resolution).
POLL_S = 0.001


async def _status(session: aiohttp.ClientSession, base: str, key: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with session.post(
        f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as resp:
        await resp.read()
        return resp.status


async def _until_refused(session: aiohttp.ClientSession, base: str, key: str, t0: float) -> float:
    deadline = t0 + ROUND_TIMEOUT_S
    while time.perf_counter() < deadline:
        if await _status(session, base, key) == 401:
            return time.perf_counter() - t0
        await asyncio.sleep(POLL_S)
    return float("inf")


async def measure(rounds: int, gateways: int, root: Path) -> dict[str, Any]:
    done = init(root / "data")
    admin_key = enroll_locally(done.settings, done.codes[0].code.reveal())
    directory = open_directory(done.settings, actor="bench")
    now = time.time()
    up_port = free_port()
    procs = [spawn_mock_upstream(up_port)]
    try:
        directory.create_model(
            "m",
            upstream_url=f"http://127.0.0.1:{up_port}/v1",
            upstream_model="mock-small",
            api=UpstreamApi.OPENAI,
            auth_style=AuthStyle.NONE,
            level=Level.INTERNAL,
            now=now,
        )
        bases = []
        for _ in range(gateways):
            proc, base = spawn_replica(done.config_path, env=os.environ)
            procs.append(proc)
            bases.append(base)
        wait_url(f"http://127.0.0.1:{up_port}/v1/models")
        for base in bases:
            wait_url(f"{base}/healthz")
        samples: dict[str, list[float]] = {
            f"{kind}_{where}": []
            for kind in ("revoke_key", "suspend_vendor")
            for where in ("same_process", "other_process")
        }
        admin = {"authorization": f"Bearer {admin_key.key.token.reveal()}"}
        async with aiohttp.ClientSession() as session:
            for n in range(rounds):
                kind = "revoke_key" if n % 2 == 0 else "suspend_vendor"
                now = time.time()
                vendor = f"v{n}"
                directory.create_vendor(
                    vendor,
                    sponsor="admin",
                    contract_start=now - 60,
                    contract_end=now + 86400,
                    networks=["127.0.0.0/8"],
                    seat_limit=1,
                    ceiling_level=Level.INTERNAL,
                    now=now,
                )
                directory.set_vendor_status(vendor, VendorStatus.ACTIVE, now=now)
                directory.create_principal(
                    f"p{n}",
                    org=vendor,
                    kind=PrincipalKind.SERVICE,
                    clearance=Level.INTERNAL,
                    now=now,
                )
                created = directory.create_key(f"p{n}", now=now)
                key = created.key.token.reveal()
                for base in bases:  # wait until every gateway knows the new key
                    while await _status(session, base, key) != 200:
                        await asyncio.sleep(POLL_S)
                if kind == "revoke_key":
                    path = f"/admin/v1/keys/{created.key.key_id}/revoke"
                    change = {"reason": "bench"}
                else:
                    path = f"/admin/v1/vendors/{vendor}/status"
                    change = {"status": "suspended", "reason": "bench"}
                t0 = time.perf_counter()
                async with session.post(bases[0] + path, json=change, headers=admin) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"admin call failed: {resp.status}")
                times = await asyncio.gather(*(_until_refused(session, b, key, t0) for b in bases))
                samples[f"{kind}_same_process"].append(times[0])
                samples[f"{kind}_other_process"].extend(times[1:])
    finally:
        stop_processes(procs, timeout=10)
        directory.engine.dispose()
    result: dict[str, Any] = {"rounds": rounds, "gateways": gateways}
    for kind, values in samples.items():
        ordered = sorted(values)
        result[kind] = {
            "n": len(ordered),
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
            "max_ms": ordered[-1] * 1000,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.rounds, args.gateways, Path(tmp)))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
