"""Bare forwarders on several HTTP stacks, measured like the gateway, to choose the stack.

Each forwarder has NO security at all: it reads the request body, POSTs it to the mock
upstream with an aiohttp client (keep-alive pool, uvloop) and passes the answer back, as one
body or chunk by chunk for ``text/event-stream``. Paths under ``/hold`` go to the slow
"hold" mock instead (prefix stripped), so one forwarder process serves every phase.

    python bench/stacks.py [--quick] [--json out.json] [--stacks aiohttp,uvicorn,...]
    python -m bench.stacks serve --stack aiohttp --port P --upstream URL --hold-upstream URL

Stacks: ``aiohttp`` (aiohttp web server), ``uvicorn`` (uvicorn + uvloop + httptools, raw
ASGI app), ``granian-asgi`` and ``granian-rsgi`` (granian's Rust HTTP server, one worker,
uvloop). uvicorn, httptools and granian are not project dependencies:
``.venv/bin/pip install uvicorn httptools granian`` (stacks whose server is missing are
skipped).

This module also holds what the gateway benchmark shares with it: the phase plan, the
request bodies, starting the mock upstreams, and measuring one target over every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import (
    Child,
    Children,
    LoadSpec,
    PhaseResult,
    free_port,
    python_module,
    raise_nofile,
    run_phase,
    terminate_on_signals,
    wait_http,
)

UPSTREAM_MODEL = "mock-small"
CHAT_PATH = "/v1/chat/completions"
HOLD_PREFIX = "/hold"
PROMPT = "Write one short sentence about load testing a gateway."
STACKS = ("aiohttp", "uvicorn", "granian-asgi", "granian-rsgi")
# Upstream client of every forwarder (same settings as the gateway's).
UPSTREAM_POOL = 4096
UPSTREAM_KEEPALIVE_S = 30.0


# ── the plan shared by both benchmarks ─────────────────────────────────────────────────────
@dataclass(frozen=True)
class Plan:
    c1_requests: int = 4000
    c32_requests: int = 20_000
    stream_requests: int = 6000
    warmup: int = 1000
    concurrency: int = 32
    tokens: int = 16  # completion tokens per answer (one SSE chunk each)
    stream_chunk_delay_ms: float = 1.0  # mock's pause between SSE chunks (streaming phase)
    hold_streams: int = 1000
    hold_tokens: int = 50  # hold mock: chunks per stream ...
    hold_chunk_delay_ms: float = 100.0  # ... this far apart: each stream lasts ~5 s
    rounds: int = 3  # direct/gateway pairs, alternated; the median of each figure is reported
    stack_rounds: int = 2  # rounds of the bare-forwarder comparison (stacks take turns)
    quiet_max_wait_s: float = 60.0  # longest wait for an idle machine before each phase
    durable_commits: int = 2000  # one-row SQLite commits timed beside the audit database

    def deadline(self, requests: int) -> float:
        return 60.0 + requests / 200.0


FULL = Plan()
QUICK = Plan(
    c1_requests=300,
    c32_requests=2000,
    stream_requests=600,
    warmup=100,
    hold_tokens=30,
    hold_chunk_delay_ms=100.0,
    rounds=1,
    stack_rounds=1,
    quiet_max_wait_s=5.0,
    durable_commits=500,
)
QUICK_STACKS = ("aiohttp",)


def chat_body(model: str, *, stream: bool) -> str:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
    }
    if stream:
        # Asked by the client, so the upstream does the same work direct and through the
        # gateway (the gateway then passes the usage chunk on instead of removing it).
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body)


@dataclass(frozen=True)
class Target:
    """Where the load generator sends: the base URL, the model name, the headers."""

    name: str
    base: str
    model: str
    headers: Mapping[str, str]
    hold_base: str | None = None  # base URL whose chat path reaches the hold mock
    hold_model: str | None = None
    more_bases: tuple[str, ...] = ()  # other replicas: calls go to each base in turn


@dataclass
class Mocks:
    fast: Child
    fast_base: str
    hold: Child
    hold_base: str


def garrison_cli(*args: str) -> list[str]:
    """The ``garrison`` command of this interpreter's environment."""
    return python_module("garrison.cli.main", *args)


def start_mocks(children: Children, plan: Plan) -> Mocks:
    """Two mock upstreams: 16 tokens (1 ms between stream chunks), and the slow hold mock."""
    fast_port, hold_port = free_port(), free_port()
    fast = children.spawn(
        "mock-fast",
        garrison_cli(
            "mock-upstream",
            "--port",
            str(fast_port),
            "--tokens",
            str(plan.tokens),
            "--chunk-delay-ms",
            str(plan.stream_chunk_delay_ms),
        ),
    )
    hold = children.spawn(
        "mock-hold",
        garrison_cli(
            "mock-upstream",
            "--port",
            str(hold_port),
            "--tokens",
            str(plan.hold_tokens),
            "--chunk-delay-ms",
            str(plan.hold_chunk_delay_ms),
        ),
    )
    fast_base, hold_base = f"http://127.0.0.1:{fast_port}", f"http://127.0.0.1:{hold_port}"
    wait_http(fast_base + "/v1/models", fast)
    wait_http(hold_base + "/v1/models", hold)
    return Mocks(fast, fast_base, hold, hold_base)


def reset_mock(base: str) -> None:
    """Forget the requests the mock recorded (it keeps every one), so it does not grow."""
    import urllib.request

    req = urllib.request.Request(base + "/_mock/reset", method="POST", data=b"")  # noqa: S310
    with urllib.request.urlopen(req, timeout=5):  # noqa: S310 - loopback URL
        pass


PhaseFn = Callable[[str, LoadSpec, dict[str, int], int | None], PhaseResult]


def phase_specs(plan: Plan, target: Target) -> list[tuple[str, LoadSpec]]:
    """The three load phases against one target: non-streaming c=1 and c=32, streaming c=32."""
    url = target.base + CHAT_PATH
    common: dict[str, Any] = {
        "url": url,
        "headers": dict(target.headers),
        "spread_urls": tuple(base + CHAT_PATH for base in target.more_bases),
    }
    return [
        (
            "nonstream_c1",
            LoadSpec(
                body=chat_body(target.model, stream=False),
                concurrency=1,
                requests=plan.c1_requests,
                warmup=plan.warmup // 2,
                deadline_s=plan.deadline(plan.c1_requests) + 30.0,
                **common,
            ),
        ),
        (
            "nonstream_c32",
            LoadSpec(
                body=chat_body(target.model, stream=False),
                concurrency=plan.concurrency,
                requests=plan.c32_requests,
                warmup=plan.warmup,
                deadline_s=plan.deadline(plan.c32_requests),
                **common,
            ),
        ),
        (
            "stream_c32",
            LoadSpec(
                body=chat_body(target.model, stream=True),
                stream=True,
                concurrency=plan.concurrency,
                requests=plan.stream_requests,
                warmup=plan.warmup // 2,
                deadline_s=plan.deadline(plan.stream_requests),
                **common,
            ),
        ),
    ]


def hold_spec(plan: Plan, target: Target) -> LoadSpec:
    assert target.hold_base is not None and target.hold_model is not None
    stream_s = (plan.hold_tokens + 4) * plan.hold_chunk_delay_ms / 1000
    return LoadSpec(
        url=target.hold_base + CHAT_PATH,
        body=chat_body(target.hold_model, stream=True),
        headers=dict(target.headers),
        stream=True,
        hold=True,
        concurrency=1,
        requests=plan.hold_streams,
        warmup=3,
        request_timeout_s=stream_s + 60.0,
        deadline_s=3 * stream_s + 90.0,
    )


def measure(
    children: Children,
    plan: Plan,
    target: Target,
    watch: dict[str, int],
    *,
    reset: Sequence[str] = (),
    main_thread_of: Mapping[str, int] | None = None,
    log: Callable[[str], None] = print,
    phases: Sequence[str] | None = None,
    groups: Mapping[str, Callable[[], Sequence[int]]] | None = None,
) -> dict[str, PhaseResult]:
    """Run the load phases (all three, or those named in ``phases``) against ``target``; CPU
    is read for every ``watch`` pid and every ``groups`` process set (``run_phase``)."""
    results: dict[str, PhaseResult] = {}
    for phase, spec in phase_specs(plan, target):
        if phases is not None and phase not in phases:
            continue
        for base in reset:
            reset_mock(base)
        result = run_phase(
            children,
            f"{target.name}-{phase}",
            spec,
            watch,
            main_thread_of=main_thread_of,
            quiet_max_wait_s=plan.quiet_max_wait_s,
            groups=groups,
        )
        log(f"  {target.name:<14} {phase:<14} {describe(result)}")
        results[phase] = result
    return results


def measure_hold(
    children: Children,
    plan: Plan,
    target: Target,
    watch: dict[str, int],
    rss_of: int,
    *,
    main_thread_of: Mapping[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> PhaseResult:
    result = run_phase(
        children,
        f"{target.name}-hold",
        hold_spec(plan, target),
        watch,
        rss_of,
        main_thread_of=main_thread_of,
        quiet_max_wait_s=plan.quiet_max_wait_s,
    )
    log(f"  {target.name:<14} {'hold':<14} {describe(result)}")
    return result


def describe(result: PhaseResult) -> str:
    load = result.load
    lat = load.get("latency_ms", {})
    parts = [
        f"ok={load.get('ok')} err={load.get('errors')}",
        f"rps={load.get('rps', 0):.0f}",
        f"p50={lat.get('p50', 0):.3f} p99={lat.get('p99', 0):.3f} ms",
    ]
    if "ttft_ms" in load:
        parts.append(f"ttft p50={load['ttft_ms'].get('p50', 0):.3f} ms")
    cpu = " ".join(f"{k}={v:.3f}" for k, v in result.cpu_ms_per_call.items())
    parts.append(f"cpu ms/call: {cpu}")
    parts.append(
        f"busy {result.machine_busy_cores:.2f} cores (other {result.other_busy_cores:.2f})"
    )
    if result.rss:
        parts.append(f"peak RSS {result.rss.get('peak_mb', 0):.1f} MB")
        parts.append(f"max open {load.get('max_open')}")
    if load.get("errors"):
        parts.append(f"errors: {load.get('error_samples')}")
    return "  ".join(parts)


# ── the forwarders ─────────────────────────────────────────────────────────────────────────
_ROUTES: dict[str, str] = {}


def _routes() -> tuple[str, str]:
    if not _ROUTES:
        _ROUTES["upstream"] = os.environ["BENCH_UPSTREAM"]
        _ROUTES["hold"] = os.environ["BENCH_HOLD_UPSTREAM"]
    return _ROUTES["upstream"], _ROUTES["hold"]


def _upstream_url(path: str) -> str:
    upstream, hold = _routes()
    if path.startswith(HOLD_PREFIX):
        return hold + path[len(HOLD_PREFIX) :]
    return upstream + path


_SESSION: list[Any] = []


def _session() -> Any:
    """The upstream client, made on first use inside the server's running loop."""
    if not _SESSION:
        import aiohttp

        _SESSION.append(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=UPSTREAM_POOL, keepalive_timeout=UPSTREAM_KEEPALIVE_S
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        )
    return _SESSION[0]


_FORWARD_HEADERS = {"content-type": "application/json"}


def _is_sse(content_type: str) -> bool:
    return content_type.startswith("text/event-stream")


async def _aiohttp_handler(request: Any) -> Any:
    from aiohttp import web

    body = await request.read()
    async with _session().request(
        request.method, _upstream_url(request.path), data=body, headers=_FORWARD_HEADERS
    ) as resp:
        content_type = resp.headers.get("content-type", "application/json")
        if not _is_sse(content_type):
            raw = await resp.read()
            return web.Response(
                status=resp.status, body=raw, headers={"content-type": content_type}
            )
        out = web.StreamResponse(status=resp.status, headers={"content-type": content_type})
        await out.prepare(request)
        async for chunk in resp.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out


async def _serve_aiohttp(port: int) -> None:
    from aiohttp import web

    # Bodies up to the gateway's 8 MiB limit (bench/hostile_bodies_bench.py sends them).
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", _aiohttp_handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048, reuse_address=True)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI forwarder (no framework)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    async with _session().request(
        scope["method"],
        _upstream_url(scope["path"]),
        data=b"".join(chunks),
        headers=_FORWARD_HEADERS,
    ) as resp:
        content_type = resp.headers.get("content-type", "application/json")
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        if not _is_sse(content_type):
            await send({"type": "http.response.body", "body": await resp.read()})
            return
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def rsgi_app(scope: Any, proto: Any) -> None:
    """A raw RSGI forwarder (granian's own interface)."""
    if scope.proto != "http":
        return
    body = await proto()
    async with _session().request(
        scope.method, _upstream_url(scope.path), data=body, headers=_FORWARD_HEADERS
    ) as resp:
        content_type = resp.headers.get("content-type", "application/json")
        headers = [("content-type", content_type)]
        if not _is_sse(content_type):
            proto.response_bytes(resp.status, headers, await resp.read())
            return
        transport = proto.response_stream(resp.status, headers)
        async for chunk in resp.content.iter_any():
            await transport.send_bytes(chunk)


def _serve_uvicorn(port: int) -> None:
    import uvicorn  # type: ignore[import-not-found, unused-ignore]  # optional (see top)

    config = uvicorn.Config(
        asgi_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )
    uvicorn.Server(config).run()


def available(stack: str) -> bool:
    if stack == "uvicorn":
        return all(importlib.util.find_spec(m) for m in ("uvicorn", "httptools", "uvloop"))
    if stack.startswith("granian"):
        return importlib.util.find_spec("granian") is not None
    return True


def forwarder_argv(stack: str, port: int) -> list[str]:
    if stack.startswith("granian"):
        interface = stack.split("-", 1)[1]
        app = "bench.stacks:asgi_app" if interface == "asgi" else "bench.stacks:rsgi_app"
        return python_module(
            "granian",
            "--interface",
            "asginl" if interface == "asgi" else "rsgi",
            "--loop",
            "uvloop",
            "--workers",
            "1",
            "--runtime-threads",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backlog",
            "2048",
            "--backpressure",
            "4096",
            "--no-ws",
            "--log-level",
            "warning",
            app,
        )
    return python_module("bench.stacks", "serve", "--stack", stack, "--port", str(port))


def serve(stack: str, port: int) -> None:
    raise_nofile()
    if stack == "aiohttp":
        import uvloop

        uvloop.run(_serve_aiohttp(port))
    elif stack == "uvicorn":
        _serve_uvicorn(port)
    else:
        raise SystemExit(f"serve: unknown stack {stack!r} (granian runs from its own CLI)")


# ── the comparison ─────────────────────────────────────────────────────────────────────────
def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def direct_target(mocks: Mocks) -> Target:
    return Target("direct", mocks.fast_base, UPSTREAM_MODEL, {})


def compare_stacks(
    children: Children,
    plan: Plan,
    mocks: Mocks,
    stacks: Sequence[str],
    *,
    rounds: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, list[PhaseResult]]]:
    """Measure each stack's bare forwarder (same mocks, same phases as the gateway).

    The stacks take turns within each round, so drift on the machine touches all of them;
    the 1,000-stream hold runs in the first round only."""
    out: dict[str, dict[str, list[PhaseResult]]] = {}
    for index in range(rounds):
        if rounds > 1:
            log(f" stacks round {index + 1}/{rounds}:")
        for stack in stacks:
            if not available(stack):
                if index == 0:
                    log(f"  {stack}: not installed, skipped")
                continue
            port = free_port()
            env = {"BENCH_UPSTREAM": mocks.fast_base, "BENCH_HOLD_UPSTREAM": mocks.hold_base}
            child = children.spawn(f"fwd-{stack}", forwarder_argv(stack, port), env=env)
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/v1/models", child)
                target = Target(
                    stack,
                    base,
                    UPSTREAM_MODEL,
                    {},
                    hold_base=base + HOLD_PREFIX,
                    hold_model=UPSTREAM_MODEL,
                )
                watch = {"target": child.pid, "mock": mocks.fast.pid}
                results = measure(children, plan, target, watch, reset=[mocks.fast_base], log=log)
                if index == 0:
                    hold_watch = {"target": child.pid, "mock": mocks.hold.pid}
                    results["hold"] = measure_hold(
                        children, plan, target, hold_watch, child.pid, log=log
                    )
            finally:
                children.stop(child)
            for phase, result in results.items():
                out.setdefault(stack, {}).setdefault(phase, []).append(result)
    return out


def figures(result: PhaseResult) -> dict[str, float]:
    """The flat figures of one phase: latency, calls/s, CPU per call, memory."""
    load = result.load
    out = {
        "p50": float(load["latency_ms"]["p50"]),
        "p99": float(load["latency_ms"]["p99"]),
        "rps": float(load["rps"]),
        "errors": float(load["errors"]),
        "ok": float(load["ok"]),
    }
    if "ttft_ms" in load:
        out["ttft_p50"] = float(load["ttft_ms"]["p50"])
        out["ttft_p99"] = float(load["ttft_ms"]["p99"])
        out["max_open"] = float(load.get("max_open", 0))
    for proc, value in result.cpu_ms_per_call.items():
        out[f"cpu_{proc}"] = value
        out[f"util_{proc}"] = result.cpu_ms[proc] / 1000 / result.wall_s if result.wall_s else 0
    for key, value in result.rss.items():
        out[f"rss_{key}"] = value
    out["machine_busy_cores"] = result.machine_busy_cores
    out["other_busy_cores"] = result.other_busy_cores
    return out


def aggregate(results: Sequence[PhaseResult]) -> dict[str, float]:
    """The median of each figure over rounds."""
    per = [figures(r) for r in results]
    keys = per[0].keys()
    return {k: median([p[k] for p in per if k in p]) for k in keys}


def stack_rows(
    direct: Mapping[str, Mapping[str, float]],
    stacks: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> list[dict[str, Any]]:
    """One comparison row per stack, from figures (medians over rounds) of each phase."""
    rows = []
    for stack, f in stacks.items():
        rows.append(
            {
                "stack": stack,
                "added_p50_c1_ms": f["nonstream_c1"]["p50"] - direct["nonstream_c1"]["p50"],
                "added_p99_c1_ms": f["nonstream_c1"]["p99"] - direct["nonstream_c1"]["p99"],
                "rps_c32": f["nonstream_c32"]["rps"],
                "added_p50_c32_ms": f["nonstream_c32"]["p50"] - direct["nonstream_c32"]["p50"],
                "cpu_ms_per_call_c1": f["nonstream_c1"]["cpu_target"],
                "cpu_ms_per_call_c32": f["nonstream_c32"]["cpu_target"],
                "cpu_ms_per_call_stream": f["stream_c32"]["cpu_target"],
                "added_ttft_p50_stream_ms": f["stream_c32"]["ttft_p50"]
                - direct["stream_c32"]["ttft_p50"],
                "added_total_p50_stream_ms": f["stream_c32"]["p50"] - direct["stream_c32"]["p50"],
                "peak_rss_mb_hold": f["hold"].get("rss_peak_mb", float("nan")),
                "hold_max_open": f["hold"].get("max_open", 0.0),
                "errors": sum(x["errors"] for x in f.values()),
                "max_other_cores": max(x["other_busy_cores"] for x in f.values()),
            }
        )
    return rows


def stack_figures(
    results: Mapping[str, Mapping[str, Sequence[PhaseResult]]],
) -> dict[str, dict[str, dict[str, float]]]:
    return {
        stack: {phase: aggregate(rs) for phase, rs in phases.items()}
        for stack, phases in results.items()
    }


def print_stack_table(rows: Sequence[Mapping[str, Any]]) -> None:
    header = (
        f"{'stack':<16} {'+p50 c1':>9} {'+p99 c1':>9} {'CPU c1':>8} {'calls/s c32':>12} "
        f"{'CPU c32':>12} {'CPU ms/stream':>14} {'+TTFT p50':>10} {'RSS MB':>8} "
        f"{'held':>5} {'other load':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['stack']:<16} {r['added_p50_c1_ms']:>9.3f} {r['added_p99_c1_ms']:>9.3f} "
            f"{r['cpu_ms_per_call_c1']:>8.3f} {r['rps_c32']:>12.0f} "
            f"{r['cpu_ms_per_call_c32']:>12.3f} {r['cpu_ms_per_call_stream']:>14.3f} "
            f"{r['added_ttft_p50_stream_ms']:>10.3f} "
            f"{r['peak_rss_mb_hold']:>8.1f} {r['hold_max_open']:>5.0f} "
            f"{r['max_other_cores']:>10.2f}"
        )


def run_comparison(plan: Plan, stacks: Sequence[str], log_dir: Path) -> dict[str, Any]:
    direct: dict[str, list[PhaseResult]] = {}
    results: dict[str, dict[str, list[PhaseResult]]] = {}
    with terminate_on_signals(), Children(log_dir) as children:
        mocks = start_mocks(children, plan)
        for index in range(plan.rounds):
            print(f"round {index + 1}/{plan.rounds}: direct to the mock")
            for phase, result in measure(
                children,
                plan,
                direct_target(mocks),
                {"mock": mocks.fast.pid},
                reset=[mocks.fast_base],
            ).items():
                direct.setdefault(phase, []).append(result)
        print("bare forwarders:")
        results = compare_stacks(children, plan, mocks, stacks, rounds=plan.rounds)
    direct_figures = {p: aggregate(rs) for p, rs in direct.items()}
    rows = stack_rows(direct_figures, stack_figures(results))
    return {
        "plan": asdict(plan),
        "direct": {p: [asdict(r) for r in rs] for p, rs in direct.items()},
        "stacks": {
            s: {p: [asdict(r) for r in rs] for p, rs in phases.items()}
            for s, phases in results.items()
        },
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        parser = argparse.ArgumentParser(prog="bench.stacks serve")
        parser.add_argument("--stack", choices=("aiohttp", "uvicorn"), required=True)
        parser.add_argument("--port", type=int, required=True)
        opts = parser.parse_args(args[1:])
        serve(opts.stack, opts.port)
        return 0
    parser = argparse.ArgumentParser(description="Compare bare forwarders on HTTP stacks.")
    parser.add_argument("--quick", action="store_true", help="small counts (smoke check)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated")
    parser.add_argument("--rounds", type=int, help="rounds (default: the plan's stack_rounds)")
    opts = parser.parse_args(args)
    plan = QUICK if opts.quick else FULL
    plan = replace(plan, rounds=opts.rounds or plan.stack_rounds)
    with tempfile.TemporaryDirectory(prefix="garrison-stacks-") as tmp:
        report = run_comparison(plan, [s for s in opts.stacks.split(",") if s], Path(tmp))
    print()
    print_stack_table(report["rows"])
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
