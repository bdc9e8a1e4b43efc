"""Issue 18's event-loop cuts, each timed alone: the CPU one step of a model call costs.

    PYTHONPATH=<tree>/src:<tree> python bench/loop_cuts_bench.py [--rounds 7] [--calls N]

Run it once with the tree before a cut and once with the tree after (a ``git worktree`` of
main beside this one), interleaved, on the same machine: it times whatever ``garrison`` is
on the path. CPU time (``time.process_time``) per call, the min and median over
``--rounds`` rounds of ``--calls`` calls each, in ns.

* ``middleware``: ``Application._handle`` of ``GET /healthz`` on the data plane's app as
  ``build_app`` makes it (routing, the middleware chain, the handler), under uvloop: what
  the middleware chain costs every request.
* ``address_text``: the caller's address as the audit events spell it, from the address
  ``peer_address`` returns (IPv4 and IPv6): once per model call, in ``admitted``.
* ``loop look-ups``: what a forwarded call does with the loop and its task outside
  aiohttp: the handler's task for ``state.live`` (``_handle_model_call``), the loop for the
  call's deadline and the deadline entered and left (``forward``): before, with
  ``asyncio.current_task()``, ``get_running_loop()`` and ``asyncio.timeout_at``; after,
  with the loop kept on the state (the deadline is ``asyncio.timeout_at`` in both: a copy of
  its state machine with the loop passed in saved ~2 µs more and was not kept, as a
  hand-written equivalent of the standard library on the cut path).
* ``primitives``: what the event loop's look-ups cost on Python 3.11 (each one a
  ``getpid()``), for the cuts this issue measured and dropped.

Bounded: a few seconds per section.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import statistics
import time
import timeit
from collections.abc import Awaitable, Callable
from typing import Any, cast
from unittest import mock

import uvloop
from aiohttp.test_utils import make_mocked_request

from garrison.gateway.app import build_app
from garrison.gateway.state import GatewayState
from garrison.store.snapshot import Snapshot


def _report(name: str, per_call_ns: list[float]) -> None:
    median = statistics.median(per_call_ns)
    print(f"{name:<34} min {min(per_call_ns):8.0f} ns   median {median:8.0f} ns")


def _sync(name: str, stmt: Callable[[], object], rounds: int, calls: int) -> None:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        timeit.Timer(stmt).timeit(calls)
        times.append((time.process_time() - start) / calls * 1e9)
    _report(name, times)


async def _async(name: str, step: Callable[[], Awaitable[object]], rounds: int, calls: int) -> None:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            await step()
        times.append((time.process_time() - start) / calls * 1e9)
    _report(name, times)


async def middleware(rounds: int, calls: int) -> None:
    state = GatewayState(snapshot=Snapshot.empty(), pepper=b"p" * 32, audit=cast(Any, None))
    app = build_app(state)
    app.freeze()
    protocol = mock.Mock(garrison_reserve=False)  # not a reserve connection
    request = make_mocked_request("GET", "/healthz", app=app, protocol=cast(Any, protocol))

    async def step() -> object:
        return await app._handle(request)

    response = await step()
    assert getattr(response, "status", None) == 200
    await _async("middleware: GET /healthz _handle", step, rounds, calls)


def address_text(rounds: int, calls: int) -> None:
    try:
        from garrison.edge.client_address import address_text as text
    except ImportError:
        text = str  # before the cut
    v4 = ipaddress.ip_address("203.0.113.7")
    v6 = ipaddress.ip_address("2001:db8::5")
    _sync("address_text: IPv4", lambda: text(v4), rounds, calls)
    _sync("address_text: IPv6", lambda: text(v6), rounds, calls)


async def loop_lookups(rounds: int, calls: int) -> None:
    state = GatewayState(snapshot=Snapshot.empty(), pepper=b"p" * 32, audit=cast(Any, None))
    state_any: Any = state
    kept = hasattr(state, "loop")  # after the cut: the loop kept on the state
    if not kept:

        async def step() -> object:
            task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            async with asyncio.timeout_at(loop.time() + 60.0):
                pass
            return task

    else:
        state_any.loop = asyncio.get_running_loop()

        async def step() -> object:
            task = asyncio.current_task(state_any.loop)
            loop = state_any.loop
            async with asyncio.timeout_at(loop.time() + 60.0):
                pass
            return task

    await _async("loop look-ups: one forwarded call", step, rounds, calls)


async def primitives(rounds: int, calls: int) -> None:
    loop = asyncio.get_running_loop()
    _sync("getpid()", os.getpid, rounds, calls)
    _sync("asyncio.get_running_loop()", asyncio.get_running_loop, rounds, calls)
    _sync("asyncio.current_task()", asyncio.current_task, rounds, calls)
    _sync("asyncio.current_task(loop)", lambda: asyncio.current_task(loop), rounds, calls)


async def main(rounds: int, calls: int) -> None:
    await middleware(rounds, calls)
    address_text(rounds, calls)
    await loop_lookups(rounds, calls)
    await primitives(rounds, calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    uvloop.run(main(args.rounds, args.calls))
