"""Hostile bodies: four tenants send 8 MiB bodies of many tiny JSON parts; does a fifth notice?

    python bench/hostile_bodies_bench.py [--seconds S] [--json out.json]

Every process is separate and on 127.0.0.1: the fast mock upstream (``garrison
mock-upstream``), a *sink* upstream for the hostile calls (reads the body, answers a fixed
completion without parsing: the gateway's work is what is measured, not the mock's), the
target, one victim process and one hostile process. Targets, side by side:

* ``forwarder``: the bare aiohttp forwarder of ``bench/stacks.py`` (no security at all),
* ``gateway``: ``garrison serve`` as shipped (authentication, durable audit, content rules;
  bodies of ``offload_body_bytes`` or more parsed, scanned and re-encoded in worker
  processes),
* ``gateway-inline``: the same with ``offload_body_bytes`` above the body limit (every body
  handled on the event loop: the behaviour before issue 11 item 9).

For each target: the victim alone (``quiet``), then the victim while four hostile tenants
(one key each) each send hostile bodies back to back (``hostile``). The victim sends small
non-streaming chat calls at concurrency 1 for ``--seconds`` and reports p50/p99. Each
scenario is bounded in time. The write-up is in docs/benchmarks.md.

    python -m bench.hostile_bodies_bench sink --port P
    python -m bench.hostile_bodies_bench victim --url U --model M --key K --seconds S
    python -m bench.hostile_bodies_bench hostile --url U --model M --keys K1,K2 --seconds S
    python -m bench.hostile_bodies_bench stall   # where to parse: inline, thread or process

``stall`` parses and re-encodes four hostile bodies inline, with ``asyncio.to_thread`` and
in a one-process pool while a 1 ms timer runs on the loop, and prints the loop's longest
stall for each (why body_work.py uses a process, not a thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import Child, Children, free_port, python_module, summarize_ns, wait_http
from bench.stacks import (
    CHAT_PATH,
    HOLD_PREFIX,
    UPSTREAM_MODEL,
    Plan,
    chat_body,
    forwarder_argv,
    garrison_cli,
    start_mocks,
)

MODULE = "bench.hostile_bodies_bench"
VICTIM_MODEL = "bench-model"
SINK_MODEL = "bench-sink"
HOSTILE_TENANTS = 4
# Just under the gateway's 8 MiB body limit.
HOSTILE_BYTES = 8 * 1024 * 1024 - 4096
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
SINK_ANSWER = json.dumps(
    {
        "id": "chatcmpl-sink",
        "object": "chat.completion",
        "created": 0,
        "model": UPSTREAM_MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()


def hostile_body(model: str) -> bytes:
    """A valid chat body of about ``HOSTILE_BYTES`` made of one-character text parts."""
    part = {"type": "text", "text": "a"}
    head = json.dumps({"model": model, "messages": [{"role": "user", "content": []}]})
    one = len(json.dumps(part, separators=(",", ":"))) + 1
    count = (HOSTILE_BYTES - len(head)) // one
    body = {"model": model, "messages": [{"role": "user", "content": [part] * count}]}
    return json.dumps(body, separators=(",", ":")).encode()


# ── the child processes ────────────────────────────────────────────────────────────────────
async def _sink(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=SINK_ANSWER, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=b'{"object":"list","data":[]}', content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", answer)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def _victim(url: str, model: str, key: str, seconds: float) -> dict[str, Any]:
    import aiohttp

    body = chat_body(model, stream=False).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    latencies: list[int] = []
    statuses: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(20):  # warm-up: connection, caches
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
        deadline = time.monotonic() + seconds
        window = [time.time()]
        while time.monotonic() < deadline:
            started = time.perf_counter_ns()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
            statuses[resp.status] += 1
            if resp.status == 200:
                latencies.append(time.perf_counter_ns() - started)
    window.append(time.time())
    return {
        "calls": len(latencies),
        "statuses": dict(statuses),
        "window": window,
        **summarize_ns(latencies),
    }


async def _hostile(url: str, model: str, keys: Sequence[str], seconds: float) -> dict[str, Any]:
    """Each key sends hostile bodies back to back until "stop" arrives on standard input
    (or ``seconds`` pass); says "ready" once its body is built."""
    import aiohttp

    body = hostile_body(model)
    statuses: Counter[int] = Counter()
    latencies: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(seconds, stop.set)

    async def wait_for_stop() -> None:
        await asyncio.to_thread(sys.stdin.readline)
        stop.set()

    async def tenant(key: str) -> None:
        headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                started = time.perf_counter_ns()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                    statuses[resp.status] += 1
                    latencies.append(time.perf_counter_ns() - started)
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] += 1

    print(json.dumps({"event": "ready"}), flush=True)
    waiter = asyncio.create_task(wait_for_stop())
    await asyncio.gather(*(tenant(k) for k in keys))
    waiter.cancel()
    return {"body_bytes": len(body), "statuses": dict(statuses), **summarize_ns(latencies)}


def _parse_and_encode(raw: bytes) -> int:
    import orjson

    return len(orjson.dumps(orjson.loads(raw)))


async def _probe(stop: asyncio.Event, stalls: list[float]) -> None:
    """A 1 ms timer on the loop; how late each tick came."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append(time.perf_counter() - started - 0.001)


async def _stalls() -> dict[str, float]:
    import concurrent.futures
    import multiprocessing

    raw = hostile_body("m")
    out: dict[str, float] = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, _parse_and_encode, b"{}")  # started
        for mode in ("inline", "thread", "process"):
            stop = asyncio.Event()
            stalls: list[float] = [0.0]
            prober = asyncio.create_task(_probe(stop, stalls))
            await asyncio.sleep(0.05)
            for _ in range(4):
                if mode == "inline":
                    _parse_and_encode(raw)
                    await asyncio.sleep(0)
                elif mode == "thread":
                    await asyncio.to_thread(_parse_and_encode, raw)
                else:
                    await loop.run_in_executor(pool, _parse_and_encode, raw)
            stop.set()
            await prober
            out[f"{mode}_max_stall_ms"] = round(max(stalls) * 1000, 1)
    return out


# ── the targets ────────────────────────────────────────────────────────────────────────────
@dataclass
class Target:
    name: str
    child: Child
    victim_url: str
    hostile_url: str
    victim_model: str
    hostile_model: str
    victim_key: str
    hostile_keys: list[str]
    pid: int


def seed_gateway(
    data_dir: Path, fast_base: str, sink_base: str, *, inline: bool
) -> tuple[Path, int, str, list[str]]:
    """``garrison init`` plus five principals (a victim and four hostile tenants, one key
    each) and a model per upstream, set up in Python as bench/gateway_bench.py does."""
    from garrison.bootstrap import init, open_directory
    from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi

    port = free_port()
    done = init(data_dir, host="127.0.0.1", port=port)
    directory = open_directory(done.settings, actor="bench")
    try:
        now = time.time()
        for name, base in ((VICTIM_MODEL, fast_base), (SINK_MODEL, sink_base)):
            directory.create_model(
                name,
                upstream_url=base + "/v1",
                upstream_model=UPSTREAM_MODEL,
                api=UpstreamApi.OPENAI,
                auth_style=AuthStyle.BEARER,
                level=Level.INTERNAL,
                upstream_key=UPSTREAM_KEY,
                now=now,
            )
        keys = []
        for index in range(HOSTILE_TENANTS + 1):
            principal = f"bench-tenant-{index}"
            directory.create_principal(
                principal,
                org="internal",
                kind=PrincipalKind.SERVICE,
                clearance=Level.INTERNAL,
                now=now,
            )
            keys.append(directory.create_key(principal, now=now).key.token.reveal())
    finally:
        directory.engine.dispose()
    if inline:
        with done.config_path.open("a") as config:
            config.write(f"\n[limits]\noffload_body_bytes = {1 << 30}\n")
    return done.config_path, port, keys[0], keys[1:]


def start_target(
    children: Children, kind: str, fast_base: str, sink_base: str, data_dir: Path
) -> Target:
    if kind == "forwarder":
        port = free_port()
        env = {"BENCH_UPSTREAM": fast_base, "BENCH_HOLD_UPSTREAM": sink_base}
        child = children.spawn("fwd-aiohttp", forwarder_argv("aiohttp", port), env=env)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v1/models", child)
        return Target(
            kind,
            child,
            base + CHAT_PATH,
            base + HOLD_PREFIX + CHAT_PATH,
            UPSTREAM_MODEL,
            UPSTREAM_MODEL,
            "none",
            ["none"] * HOSTILE_TENANTS,
            child.pid,
        )
    config, port, victim, hostile = seed_gateway(
        data_dir / kind, fast_base, sink_base, inline=kind == "gateway-inline"
    )
    child = children.spawn(kind, garrison_cli("serve", "--config", str(config)))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", child)
    url = base + CHAT_PATH
    return Target(kind, child, url, url, VICTIM_MODEL, SINK_MODEL, victim, hostile, child.pid)


def _json_child(children: Children, name: str, argv: list[str]) -> Child:
    return children.spawn(name, argv, pipes=True)


def _result(child: Child, timeout: float) -> dict[str, Any]:
    assert child.proc.stdout is not None
    out, _ = child.proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{child.name} printed no result:\n{child.log_tail()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def scenario(children: Children, target: Target, seconds: float, hostile: bool) -> dict[str, Any]:
    attackers = None
    if hostile:
        attackers = _json_child(
            children,
            f"hostile-{target.name}",
            python_module(
                MODULE,
                "hostile",
                "--url",
                target.hostile_url,
                "--model",
                target.hostile_model,
                "--keys",
                ",".join(target.hostile_keys),
                "--seconds",
                str(seconds + 120.0),
            ),
        )
        assert attackers.proc.stdout is not None
        attackers.proc.stdout.readline()  # "ready": its body is built
        time.sleep(2.0)  # the first hostile bodies are in flight
    victim = _json_child(
        children,
        f"victim-{target.name}",
        python_module(
            MODULE,
            "victim",
            "--url",
            target.victim_url,
            "--model",
            target.victim_model,
            "--key",
            target.victim_key,
            "--seconds",
            str(seconds),
        ),
    )
    out: dict[str, Any] = {"victim": _result(victim, seconds + 60)}
    if attackers is not None:
        assert attackers.proc.stdin is not None
        attackers.proc.stdin.write("stop\n")
        attackers.proc.stdin.flush()
        out["hostile"] = _result(attackers, 120)
    return out


def run(seconds: float, kinds: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="garrison-hostile-") as tmp,
        Children(Path(tmp)) as children,
    ):
        mocks = start_mocks(children, Plan())
        sink_port = free_port()
        sink = children.spawn("sink", python_module(MODULE, "sink", "--port", str(sink_port)))
        sink_base = f"http://127.0.0.1:{sink_port}"
        wait_http(sink_base + "/v1/models", sink)
        for kind in kinds:
            target = start_target(children, kind, mocks.fast_base, sink_base, Path(tmp))
            try:
                for hostile in (False, True):
                    label = "hostile" if hostile else "quiet"
                    result = scenario(children, target, seconds, hostile)
                    results.setdefault(kind, {})[label] = result
                    v = result["victim"]
                    extra = ""
                    if hostile:
                        h = result["hostile"]
                        extra = f"  hostile calls {h['statuses']}, p50 {h['p50']:.0f} ms"
                    print(
                        f"{kind:<15} {label:<8} victim p50 {v['p50']:8.2f} ms  "
                        f"p99 {v['p99']:8.2f} ms  max {v['max']:8.2f} ms  "
                        f"calls {v['calls']:5d}{extra}",
                        flush=True,
                    )
            finally:
                children.stop(target.child)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    sink = sub.add_parser("sink")
    sink.add_argument("--port", type=int, required=True)
    sub.add_parser("stall")
    for mode in ("victim", "hostile"):
        p = sub.add_parser(mode)
        p.add_argument("--url", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--key" if mode == "victim" else "--keys", required=True)
        p.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=5.0, help="victim time per scenario")
    parser.add_argument("--targets", default="forwarder,gateway,gateway-inline")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.mode == "sink":
        asyncio.run(_sink(args.port))
        return 0
    if args.mode == "stall":
        print(json.dumps(asyncio.run(_stalls())))
        return 0
    if args.mode == "victim":
        print(json.dumps(asyncio.run(_victim(args.url, args.model, args.key, args.seconds))))
        return 0
    if args.mode == "hostile":
        keys = args.keys.split(",")
        print(json.dumps(asyncio.run(_hostile(args.url, args.model, keys, args.seconds))))
        return 0
    print(f"machine: {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()}")
    results = run(args.seconds, args.targets.split(","))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
