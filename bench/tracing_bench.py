"""What OpenTelemetry tracing costs a model call: off (the default) against on.

    python bench/tracing_bench.py [--calls 300] [--rounds 5]

One gateway in this process with a mock upstream, both on 127.0.0.1; calls are made one at
a time by an aiohttp client in the same process. Rounds alternate off and on (so drift in
the machine's load falls on both alike); the figure is the median over rounds of CPU time
per call (this process: gateway, mock and client together — the client and mock are the
same in both modes, so the difference is tracing's) and of wall time per call. "On" is the
SDK with its batch processor and an exporter that drops the spans (the span's in-process
cost, not the network's). Also timed: the one test the model handler makes when tracing is
off (``tracing.span_for is None``). Bounded in calls and time; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from garrison.bootstrap import enroll_locally, init, open_directory
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi
from garrison.domain.provenance import Provenance
from garrison.gateway import tracing
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway

BODY = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}


def _provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


async def _calls(base: str, key: str, n: int) -> tuple[float, float]:
    """CPU and wall seconds per call over ``n`` sequential calls."""
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            async with session.post(base + "/v1/chat/completions", json=BODY, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
        return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


async def main(calls: int, rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="garrison-tracing-bench-"))
    done = init(root / "data")
    enroll_locally(done.settings, done.codes[0].code.reveal())
    mock = MockUpstream(MockConfig())
    port = await mock.start("127.0.0.1", 0)
    directory = open_directory(done.settings, actor="bench")
    now = time.time()
    directory.create_model(
        "assistant",
        upstream_url=f"http://127.0.0.1:{port}/v1",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.INTERNAL,
        now=now,
    )
    who = directory.create_principal(
        "bench-user", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    key = directory.create_key(
        who, now=now, provenance=Provenance.ENROLLED, created_by=who
    ).key.token.reveal()
    settings = Settings(
        database_url=done.settings.database_url,
        key_dir=done.settings.key_dir,
        port=0,
        witness_dir=done.settings.witness_dir,
        detect_enabled=False,
    )
    gateway = Gateway(settings)
    await gateway.start()
    base = f"http://127.0.0.1:{gateway.port}"
    figures: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    try:
        await _calls(base, key, min(calls, 50))  # warm up
        for _ in range(rounds):
            tracing.disable()
            figures["off"].append(await _calls(base, key, calls))
            tracing.enable(_provider())
            figures["on"].append(await _calls(base, key, calls))
            tracing.disable()
    finally:
        await gateway.stop()
        await mock.stop()
        directory.engine.dispose()
    loaded = any(m.startswith("opentelemetry") for m in sys.modules)
    check_ns = (
        min(timeit.repeat("tracing.span_for is None", globals=globals(), number=10**6, repeat=5))
        * 1000
    )
    out: dict[str, Any] = {"calls_per_round": calls, "rounds": rounds, "off_check_ns": check_ns}
    for mode, values in figures.items():
        out[f"{mode}_cpu_ms"] = round(statistics.median(v[0] for v in values) * 1000, 4)
        out[f"{mode}_wall_ms"] = round(statistics.median(v[1] for v in values) * 1000, 4)
    out["on_minus_off_cpu_us"] = round((out["on_cpu_ms"] - out["off_cpu_ms"]) * 1000, 1)
    out["opentelemetry_loaded_by_the_on_rounds"] = loaded
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(main(args.calls, args.rounds))
    for name, value in result.items():
        print(f"{name}: {value}")
