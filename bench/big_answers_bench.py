"""Large non-streamed answers: memory of the gateway while N callers each get a big answer.

    python bench/big_answers_bench.py [--calls 20] [--answer-mib 50]

An upstream process answers every call with the same ``--answer-mib`` MiB chat completion
(length declared; usage last); the gateway (``garrison serve``, seeded as in
bench/hostile_bodies_bench.py) forwards ``--calls`` concurrent non-streamed calls from one
client process. Reported: statuses, the gateway's peak resident memory (VmHWM of its
process tree) and its resident memory once the calls are done. Run it with
``PYTHONPATH=<a checkout>/src`` to measure another version of the gateway.

    python -m bench.big_answers_bench upstream --port P --answer-mib M
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hostile_bodies_bench import SINK_MODEL, seed_gateway
from bench.loadgen import (
    Children,
    free_port,
    python_module,
    tree_hwm_kb,
    tree_rss_kb,
    wait_http,
)
from bench.stacks import CHAT_PATH, garrison_cli

MODULE = "bench.big_answers_bench"


def answer(mib: int) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-big",
        "object": "chat.completion",
        "created": 0,
        "model": "mock-small",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    doc["choices"][0]["message"]["content"] = "w " * (mib * 1024 * 1024 // 2 - 200)
    return json.dumps(doc).encode()


async def _upstream(port: int, mib: int) -> None:
    from aiohttp import web

    body = answer(mib)

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


async def _fire(url: str, key: str, calls: int) -> dict[str, Any]:
    import aiohttp

    body = json.dumps({"model": SINK_MODEL, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    statuses: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=calls)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
            statuses[resp.status] += 1

        await asyncio.gather(*(one() for _ in range(calls)))
    return dict(statuses)


def run(calls: int, mib: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="garrison-big-") as tmp, Children(Path(tmp)) as ch:
        port = free_port()
        up = ch.spawn(
            "upstream", python_module(MODULE, "upstream", "--port", str(port), "--mib", str(mib))
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v1/models", up)
        config, gw_port, key, _ = seed_gateway(Path(tmp) / "gw", base, base, inline=False)
        gateway = ch.spawn("gateway", garrison_cli("serve", "--config", str(config)))
        gw_base = f"http://127.0.0.1:{gw_port}"
        wait_http(gw_base + "/healthz", gateway)
        before = tree_rss_kb(gateway.pid) / 1024
        started = time.monotonic()
        statuses = asyncio.run(_fire(gw_base + CHAT_PATH, key, calls))
        wall = time.monotonic() - started
        time.sleep(1.0)
        return {
            "calls": calls,
            "answer_mib": mib,
            "statuses": statuses,
            "wall_s": round(wall, 2),
            "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(tree_hwm_kb(gateway.pid) / 1024, 1),
            "rss_after_mb": round(tree_rss_kb(gateway.pid) / 1024, 1),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--mib", type=int, required=True)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--answer-mib", type=int, default=50)
    args = parser.parse_args(argv)
    if args.mode == "upstream":
        asyncio.run(_upstream(args.port, args.mib))
        return 0
    print(json.dumps(run(args.calls, args.answer_mib)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
