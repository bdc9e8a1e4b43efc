"""Bounded work on the event loop per request: large bodies are handled in worker processes.

Parsing an 8 MiB body of many tiny parts, re-encoding it for the upstream and scanning its
text costs hundreds of milliseconds of CPU. On the event loop that stalls every other
caller; in a thread it stalls them just the same, because ``orjson`` holds the GIL for a
whole parse (measured: the loop's longest stall was 698 ms inline, 366 ms with
``asyncio.to_thread``, 11 ms with a worker process; see docs/benchmarks.md). So bodies of
``offload_body_bytes`` or more are parsed, checked and scanned (``inspect``) and later
re-encoded (``rebuild``) in a small pool of worker processes; the loop only moves bytes.
Smaller bodies cost less than a millisecond or two and stay on the loop.

The two steps each parse the body (the worker keeps no state between calls): a large body
costs two parses of CPU, none of it on the loop. The pool's queue is bounded by admission
(per-principal calls in flight and the buffered-body budget), not here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from garrison.detect.patterns import Matcher
from garrison.domain import Model
from garrison.errors import BadRequest, Overloaded
from garrison.gateway import apis
from garrison.gateway.apis import Endpoint
from garrison.gateway.content import ContentUncheckable, scan
from garrison.gateway.upstream import UpstreamBody, build_upstream_body

# Bodies of this many bytes or more are parsed, scanned and re-encoded in a worker: 128 KiB
# of the worst shape (tiny JSON parts) parses in ~3 ms, the most one call may take from
# everyone else on the loop; real long-context prompts (32k tokens) pass it.
OFFLOAD_BODY_BYTES = 128 * 1024
# Worker processes for large bodies: the design box has 2 cores and the event loop needs
# one; a second worker doubled hostile throughput and took CPU from every other caller.
# Large bodies past that wait their turn (a 200 KiB prompt takes the worker ~3 ms).
BODY_WORKERS = 1
# Workers run at this nice value: on a busy box the event loop (nice 0) wins the CPU over
# them, so large bodies wait rather than every caller's latency growing.
BODY_WORKER_NICE = 10
# Hashing releases the GIL for large inputs: digests of bodies this large run in a thread.
THREAD_DIGEST_BYTES = 1024 * 1024

Rules = tuple[tuple[str, Matcher], ...]
_T = TypeVar("_T")
log = logging.getLogger("garrison.gateway")


@dataclass(frozen=True, slots=True)
class Inspected:
    """What the event loop needs of a checked body."""

    model: str
    stream: bool
    # The parsed body when it was parsed on the loop (small bodies); None when a worker did.
    body: dict[str, Any] | None
    # Content flags, when a worker already scanned (None: scan ``body`` on the loop).
    flags: list[str] | None = None
    # The worker found the body too deep or too large to scan whole: refused, but only
    # after the decision (``flags`` raises), so the refusal reveals nothing about models.
    uncheckable: tuple[str, str] | None = None


# ── what runs in a worker (module-level, so it pickles) ───────────────────────────────────
def _inspect(endpoint: Endpoint, raw: bytes, rules: Rules) -> Inspected | tuple[str, str]:
    try:
        body = apis.parse_body(endpoint, raw)
    except BadRequest as exc:
        return exc.detail, exc.public_message
    model, stream = body["model"], body.get("stream") is True
    try:
        flags = scan(rules, body, kind=endpoint.kind) if rules else []
    except ContentUncheckable as exc:
        return Inspected(model, stream, None, None, (exc.detail, exc.public_message))
    return Inspected(model, stream, None, flags)


def _rebuild(endpoint: Endpoint, raw: bytes, model: Model) -> UpstreamBody:
    return build_upstream_body(endpoint, apis.parse_body(endpoint, raw), model)


def _lower_priority() -> None:
    os.nice(BODY_WORKER_NICE)


# ── the loop's side ────────────────────────────────────────────────────────────────────────
@dataclass(slots=True)
class BodyWork:
    """Runs ``inspect`` and ``rebuild`` inline for small bodies and in the pool for large
    ones. Without a started pool (tests that build a bare app) everything runs inline."""

    offload_bytes: int = OFFLOAD_BODY_BYTES
    workers: int = BODY_WORKERS
    pool: concurrent.futures.ProcessPoolExecutor | None = None
    # Bodies handled in a worker, for /metrics and tests.
    offloaded: int = 0
    # Large bodies go to the pool (made on the first one) once started.
    started: bool = False

    def start(self) -> None:
        """Send large bodies to the pool from now on. The pool is made with the first large
        body: a process that never sees one never pays its memory (~35 MB with the resource
        tracker, which making the pool starts: 12 MB at once, measured)."""
        self.started = True

    def _make_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawn, not fork: the gateway has threads (the audit writer) by now.
        context = multiprocessing.get_context("spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_lower_priority
        )
        return self.pool

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker. A pool whose worker died (killed, out of memory) is
        replaced, and this call is refused with 503 rather than every later one failing."""
        pool = self.pool or self._make_pool()
        loop = asyncio.get_running_loop()
        # A worker is spawned inside submit: hide the gateway's __main__ (the CLI) so the
        # worker imports only this module (23 MB) instead of the whole CLI (90 MB).
        main = sys.modules["__main__"]
        try:
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                future = loop.run_in_executor(pool, fn, *args)
            finally:
                sys.modules["__main__"] = main
            return await future
        except concurrent.futures.process.BrokenProcessPool:
            if self.pool is pool:  # the first call to see it replaces it
                log.error("body worker died; starting a new one")
                self.stop()
                self.start()
            raise Overloaded("body worker died") from None

    def stop(self) -> None:
        self.started = False
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def _large(self, raw: bytes) -> bool:
        return self.started and len(raw) >= self.offload_bytes

    async def digest(self, raw: bytes) -> str:
        if len(raw) >= THREAD_DIGEST_BYTES:
            return (await asyncio.to_thread(hashlib.sha256, raw)).hexdigest()
        return hashlib.sha256(raw).hexdigest()

    async def inspect(self, endpoint: Endpoint, raw: bytes, rules: Rules) -> Inspected:
        """The checked body (``BadRequest`` if it is not a valid call of ``endpoint``)."""
        if not self._large(raw):
            body = apis.parse_body(endpoint, raw)
            return Inspected(body["model"], body.get("stream") is True, body)
        self.offloaded += 1
        result = await self._run(_inspect, endpoint, raw, rules)
        if isinstance(result, tuple):
            detail, public = result
            raise BadRequest(detail, public_message=public)
        return result

    async def rebuild(
        self, endpoint: Endpoint, raw: bytes, seen: Inspected, model: Model
    ) -> UpstreamBody:
        """The body to forward (documented and allowed fields only), whether a usage chunk
        was asked for on the caller's behalf, and the fields dropped
        (``build_upstream_body``), built where the body was parsed."""
        if seen.body is not None:
            return build_upstream_body(endpoint, seen.body, model)
        # The upstream credential never leaves this process.
        bare = dataclasses.replace(model, upstream_key=None)
        return await self._run(_rebuild, endpoint, raw, bare)

    @staticmethod
    def flags(rules: Rules, seen: Inspected, kind: str | None = None) -> list[str]:
        """Content flags (``ContentUncheckable`` if the body cannot be scanned whole)."""
        if seen.uncheckable is not None:
            detail, public = seen.uncheckable
            raise ContentUncheckable(detail, public_message=public)
        if seen.flags is not None:
            return seen.flags
        assert seen.body is not None
        return scan(rules, seen.body, kind=kind)


__all__ = ["BODY_WORKERS", "OFFLOAD_BODY_BYTES", "BodyWork", "Inspected"]
