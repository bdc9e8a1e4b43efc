"""Memory of the gateway across an audit outage under load.

    python bench/outage_memory.py [--concurrency 16] [--warm-s 5] [--outage-s 20] [--after-s 10]

An upstream process answers every call with a small chat completion; ``garrison serve``
(seeded as in bench/hostile_bodies_bench.py) takes ``--concurrency`` callers looping
non-streamed calls. Phases: warm (the log works), outage (this process holds SQLite's write
lock on the database, so every audit commit fails: calls are refused with 503 and their
outcome records queue up for later), after (lock released, the log recovers, load goes on),
then 3 s idle. Reported per phase: calls by status, the gateway tree's RSS at the end of the
phase and its peak (VmHWM) during it. Bounded: the run takes warm + outage + after + ~10 s.

    python -m bench.outage_memory upstream --port P
    python bench/outage_memory.py sink [--batches 128]

``sink`` measures the audit sink alone, in this process: after an outage at high concurrency
the backlog and the calls that follow reach the writer in batches of many different sizes;
it writes ``--batches`` batches of distinct sizes (500–1,000 events) and reports the RSS the
process gained. Run it with ``PYTHONPATH=<a checkout>/src`` to measure another version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.big_answers_bench import answer
from bench.hostile_bodies_bench import SINK_MODEL, seed_gateway
from bench.loadgen import (
    Children,
    free_port,
    python_module,
    reset_hwm,
    tree_hwm_kb,
    tree_rss_kb,
    wait_http,
)
from bench.stacks import CHAT_PATH, garrison_cli

MODULE = "bench.outage_memory"
# Seconds after the load stops before the last reading (queued records written, GC run).
IDLE_S = 3.0


async def _upstream(port: int) -> None:
    from aiohttp import web

    body = answer(0)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=b'{"object":"list","data":[]}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def _hold_lock(db: Path, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def _load(
    url: str, key: str, concurrency: int, phases: Sequence[tuple[str, float]], pid: int, db: Path
) -> list[dict[str, Any]]:
    import aiohttp

    body = json.dumps({"model": SINK_MODEL, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def caller() -> None:
            while not stop.is_set():
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                    statuses[resp.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] += 1

        tasks = [asyncio.create_task(caller()) for _ in range(concurrency)]
        for name, seconds in phases:
            reset_hwm(pid)
            statuses.clear()
            if name == "outage":
                held = threading.Event()
                holder = threading.Thread(target=_hold_lock, args=(db, seconds, held))
                holder.start()
                held.wait(30)
                await asyncio.sleep(seconds)
                await asyncio.to_thread(holder.join)
            else:
                await asyncio.sleep(seconds)
            out.append(_reading(name, seconds, statuses, pid))
        stop.set()
        await asyncio.gather(*tasks)
    return out


def _reading(name: str, seconds: float, statuses: Counter[int], pid: int) -> dict[str, Any]:
    return {
        "phase": name,
        "seconds": seconds,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rss_mb": round(tree_rss_kb(pid) / 1024, 1),
        "peak_mb": round(tree_hwm_kb(pid) / 1024, 1),
    }


def run(concurrency: int, warm_s: float, outage_s: float, after_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="garrison-outage-") as tmp, Children(Path(tmp)) as ch:
        port = free_port()
        up = ch.spawn("upstream", python_module(MODULE, "upstream", "--port", str(port)))
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v1/models", up)
        data = Path(tmp) / "gw"
        config, gw_port, key, _ = seed_gateway(data, base, base, inline=False)
        gateway = ch.spawn("gateway", garrison_cli("serve", "--config", str(config)))
        gw_base = f"http://127.0.0.1:{gw_port}"
        wait_http(gw_base + "/healthz", gateway)
        started = {"phase": "started", "rss_mb": round(tree_rss_kb(gateway.pid) / 1024, 1)}
        phases = [("warm", warm_s), ("outage", outage_s), ("after", after_s)]
        readings = asyncio.run(
            _load(gw_base + CHAT_PATH, key, concurrency, phases, gateway.pid, data / "garrison.db")
        )
        reset_hwm(gateway.pid)
        time.sleep(IDLE_S)
        readings.append(_reading("idle", IDLE_S, Counter(), gateway.pid))
        return {"concurrency": concurrency, "readings": [started, *readings]}


def run_sink(batches: int) -> dict[str, Any]:
    import gc

    from garrison.audit import AuditEvent, EventName, SqliteAuditSink
    from garrison.store import make_engine, migrate

    def rss_mb() -> float:
        return round(tree_rss_kb(os.getpid()) / 1024, 1)

    with tempfile.TemporaryDirectory(prefix="garrison-sink-") as tmp:
        path = Path(tmp) / "audit.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        sink = SqliteAuditSink(path)
        sink.open()
        sink.write_batch([AuditEvent(EventName.REQUEST_DENIED, at=1.0, request_id="warm")])
        gc.collect()
        before = rss_mb()
        written = 0
        for b in range(batches):
            size = 500 + (b * 499) // max(1, batches - 1)
            events = [
                AuditEvent(
                    EventName.REQUEST_COMPLETED,
                    at=2.0,
                    request_id=f"r{written + k}",
                    data={"status": 503, "outcome": "audit_unavailable"},
                )
                for k in range(size)
            ]
            sink.write_batch(events)
            written += size
        del events
        gc.collect()
        after = rss_mb()
        sink.close()
    return {"batches": batches, "events": written, "rss_before_mb": before, "rss_after_mb": after}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, required=True)
    sink = sub.add_parser("sink")
    sink.add_argument("--batches", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warm-s", type=float, default=5.0)
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--after-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.mode == "upstream":
        asyncio.run(_upstream(args.port))
        return 0
    if args.mode == "sink":
        print(json.dumps(run_sink(args.batches)))
        return 0
    result = run(args.concurrency, args.warm_s, args.outage_s, args.after_s)
    for reading in result["readings"]:
        print(json.dumps(reading))
    return 0


if __name__ == "__main__":
    sys.exit(main())
