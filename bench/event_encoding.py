"""Audit event building and encoding: what the two records of one model call cost.

    python bench/event_encoding.py [--calls 20000] [--rounds 7] [--json OUT]

One forwarded call writes two records on the data plane: ``request.allowed`` (built by the
model handler) and ``request.completed`` (``gateway.outcome.end_call``). Per round this
builds and encodes both for N calls exactly as the gateway does (the event built, its record
encoded by ``prepare`` as the writer's ``append`` does, then spliced with its leaf index),
the writer and the histograms replaced by stubs that do nothing else. It reports µs per call
(both records), the median and the best of the rounds, and the same for ``prepare`` alone
on events already built (the encoding itself).

It runs against any tree with the same entry points (``PYTHONPATH=<tree>/src``), so one run
of it before and one after a change to the event types compare like with like. Bounded: N
calls per round; stops by itself.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from garrison.audit import AuditEvent, EventName
from garrison.domain.outcomes import CallOutcome
from garrison.gateway import outcome
from garrison.gateway.call import Call
from garrison.gateway.metering import Usage

NOW = 1_700_000_000.25


class _Hist:
    def observe(self, value: float) -> None:
        pass


class _Writer:
    """The writer's ``append_later`` minus the queue: the event's record encoded now."""

    def __init__(self) -> None:
        self.last: AuditEvent | None = None

    def append_later(self, event: AuditEvent) -> None:
        self.last = event.prepare()


def _state() -> Any:
    latency = SimpleNamespace(duration=_Hist(), ttfb=_Hist(), added=_Hist(), upstream=_Hist())
    return SimpleNamespace(
        outcomes=collections.Counter(),
        latency=latency,
        model_outcomes=collections.Counter(),
        clock=lambda: NOW,
        audit=_Writer(),
    )


def _call(n: int) -> Call:
    call = Call("/v1/chat/completions", f"req_{n:016x}", "198.51.100.7")
    call.principal_id, call.credential_id, call.org_id, call.model = "p-1", "k-1", "o-1", "m-1"
    call.body_sha256, call.body_bytes = "ab" * 32, 321
    call.forwarded = call.started
    return call


def _allowed(call: Call) -> AuditEvent:
    """The model handler's ``request.allowed`` (either tree's way of building it)."""
    typed = getattr(call, "allowed_event", None)
    if typed is not None:
        event: AuditEvent = typed(
            NOW,
            reasons=("policy.allowed",),
            policies=("base", "clearance"),
            stream=False,
            upstream_model="gpt-x",
            level="restricted",
        )
        return event
    return call.event(
        EventName.REQUEST_ALLOWED,
        NOW,
        reasons=["policy.allowed"],
        policies=["base", "clearance"],
        stream=False,
        upstream_model="gpt-x",
        level="restricted",
    )


def one_round(calls: int) -> dict[str, float]:
    state = _state()
    usage = Usage(tokens_in=12, tokens_out=34)
    made = [_call(n) for n in range(calls)]
    started = time.thread_time()
    for index, call in enumerate(made):
        _allowed(call).prepare().encode(2 * index)
        outcome.end_call(
            state, call, CallOutcome.OK, status=200, usage=usage, bytes_out=999, ttfb=0.005
        )
        state.audit.last.encode(2 * index + 1)
    per_call = (time.thread_time() - started) / calls * 1e6
    built = [_allowed(call) for call in made]
    started = time.thread_time()
    for event in built:
        event.prepare()
    encode_only = (time.thread_time() - started) / calls * 1e6
    return {"us_per_call": per_call, "us_prepare_allowed": encode_only}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    one_round(min(args.calls, 1000))  # warm-up
    rounds = [one_round(args.calls) for _ in range(args.rounds)]
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "calls": args.calls,
        "rounds": args.rounds,
    }
    for key in ("us_per_call", "us_prepare_allowed"):
        values = [r[key] for r in rounds]
        result[key] = {"median": statistics.median(values), "best": min(values)}
    print(
        f"two records per call: {result['us_per_call']['median']:.2f} µs median "
        f"({result['us_per_call']['best']:.2f} best); prepare(request.allowed) alone: "
        f"{result['us_prepare_allowed']['median']:.2f} µs median "
        f"({result['us_prepare_allowed']['best']:.2f} best)"
    )
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
