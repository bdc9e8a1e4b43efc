"""Locks: from the admin call to enforcement — refusal of the next call and cut of a live stream.

    python bench/lock_bench.py [--rounds 40] [--gateways 1|2] [--json OUT]

One node: ``garrison serve`` (one process, or two on the same SQLite database with
``--gateways 2``) in front of two ``garrison mock-upstream`` processes, a fast one for
non-streaming calls and a slow one (``--tokens 5000 --chunk-delay-ms 10``: a 50 s stream)
for streams. Each round makes fresh set-up, written directly with ``open_directory``: for
each of its two measurements a vendor, a principal and a key, used from a loopback address
of its own (127.0.0.x, the client socket bound to it), and waits until every gateway accepts
the key. The lock kind alternates by round: credential, principal, vendor, network (the
client's /32). Locks go through the admin API of the first gateway (the call the CLI makes).

* refusal: from just before sending ``POST /admin/v1/locks`` to the first 403 of a
  non-streaming chat completion that each gateway answers; the poll loop (one call, then
  1 ms of sleep) starts at the same instant as the admin call.
* cut: a streaming chat completion is open on every gateway and has delivered
  ``CHUNKS_BEFORE_LOCK`` SSE events; from just before sending the lock to the arrival of the
  stream's final error event (``"code": "forbidden"``), and to the end of the stream
  (``cut_end``; ``end_after_event`` is the gap between the two). A stream that ends without
  that event, or is not cut within the round timeout, is a failure.

Locks are lifted (not timed) at the end of each measurement. Before starting, the script
waits (at most ``--settle-seconds``) for the machine to use under 0.25 cores; it reports the
machine's busy cores during the run, its own share (this process and its children) and the
rest as ``other_cores``. Everything runs on 127.0.0.0/8, each wait is bounded by
``ROUND_TIMEOUT_S`` and the run by ``--max-seconds``; the processes are stopped with SIGINT
(killed if they do not exit). Figures are in ms; with fewer than 100 samples the p99 is the
maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import garrison

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import (
    CLK_TCK,
    REPO_ROOT,
    free_port,
    machine_busy_ticks,
    wait_for_quiet,
    wait_url,
)
from garrison.bootstrap import enroll_locally, init, open_directory
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi, VendorStatus
from garrison.store.directory import Directory

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
# The target: lock → refusal and lock → cut, each at p99.
TARGET_MS = 100.0
# Longest wait for any one thing in a round (acceptance, refusal, stream start, cut).
ROUND_TIMEOUT_S = 5.0
# Sleep between two polls while waiting for the refusal (the measurement's resolution).
POLL_S = 0.001
# SSE events a stream must have delivered before the lock is placed.
CHUNKS_BEFORE_LOCK = 5
# Lock kinds, one per round in turn ("model" and "all" would cover the other measurements'
# calls too, and lifting "all" takes a second admin).
KINDS = ("credential", "principal", "vendor", "network")
# Slow upstream: 5,000 tokens 10 ms apart, a stream far longer than any round.
SLOW_TOKENS = 5000
SLOW_CHUNK_DELAY_MS = 10.0
# Gateway log lines kept in the result when they look like trouble.
LOG_LINES_KEPT = 20


def _address(index: int) -> str:
    """The index-th client address: 127.0.0.2, 127.0.0.3, … (then 127.0.1.2, …)."""
    return f"127.0.{index // 250}.{2 + index % 250}"


def _commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    dirty = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "src_dirty": dirty,
        # Where the code under test came from (PYTHONPATH can point elsewhere than the repo).
        "garrison_from": str(Path(garrison.__file__).resolve().parent),
    }


@dataclass(frozen=True, slots=True)
class Subject:
    """What one measurement locks: a vendor, its principal, a key and a client address."""

    vendor: str
    principal: str
    key_id: str
    key: str
    address: str

    def target(self, kind: str) -> str:
        return {
            "credential": self.key_id,
            "principal": self.principal,
            "vendor": self.vendor,
            "network": f"{self.address}/32",
        }[kind]


def _make_subject(directory: Directory, name: str, address: str) -> Subject:
    now = time.time()
    vendor = f"v-{name}"
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
    principal = f"p-{name}"
    directory.create_principal(
        principal, org=vendor, kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=now
    )
    created = directory.create_key(principal, now=now)
    return Subject(vendor, principal, created.key.key_id, created.key.token.reveal(), address)


def _session(address: str | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(address, 0) if address else None)
    timeout = aiohttp.ClientTimeout(total=3 * ROUND_TIMEOUT_S)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def _status(session: aiohttp.ClientSession, base: str, key: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with session.post(
        f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as resp:
        await resp.read()
        return resp.status


async def _try_status(session: aiohttp.ClientSession, base: str, key: str) -> int:
    """``_status``, with a failed connection as status 0 (counted, not fatal)."""
    try:
        return await _status(session, base, key)
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def _accepted(session: aiohttp.ClientSession, bases: list[str], key: str) -> bool:
    """Wait until every gateway has loaded the new key (answers 200)."""
    deadline = time.perf_counter() + ROUND_TIMEOUT_S
    for base in bases:
        while await _try_status(session, base, key) != 200:
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(POLL_S)
    return True


class Admin:
    """Locks and lifts through the first gateway's admin API; times each lock call."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session = session
        self.base = f"{base}/admin/v1"
        self.headers = {"authorization": f"Bearer {token}"}
        self.lock_call_s: list[float] = []

    async def lock(self, kind: str, target: str) -> str:
        body = {"kind": kind, "target": target, "reason": "lock bench"}
        started = time.perf_counter()
        try:
            async with self.session.post(
                f"{self.base}/locks", json=body, headers=self.headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeError(f"lock {kind} {target}: {type(exc).__name__}") from None
        self.lock_call_s.append(time.perf_counter() - started)
        if status != 201:
            raise RuntimeError(f"lock {kind} {target}: {status} {raw[:200]!r}")
        return str(orjson.loads(raw)["id"])

    async def lift(self, lock_id: str) -> bool:
        try:
            async with self.session.post(
                f"{self.base}/locks/{lock_id}/lift",
                json={"reason": "lock bench"},
                headers=self.headers,
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@dataclass
class Tally:
    samples: dict[str, list[float]] = field(default_factory=dict)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, measure: str, where: str, kind: str, seconds: float) -> None:
        self.samples.setdefault(f"{measure}/{where}", []).append(seconds)
        self.by_kind.setdefault(f"{measure}/{where}/{kind}", []).append(seconds)

    def fail(self, what: str, note: str) -> None:
        self.failures[what] += 1
        if len(self.notes) < LOG_LINES_KEPT:
            self.notes.append(note)


def _where(index: int) -> str:
    return "same_process" if index == 0 else "other_process"


async def _until_refused(
    session: aiohttp.ClientSession, base: str, key: str, t0: float, tally: Tally
) -> float | None:
    deadline = t0 + ROUND_TIMEOUT_S
    while time.perf_counter() < deadline:
        status = await _try_status(session, base, key)
        if status == 403:
            return time.perf_counter() - t0
        if status != 200:
            tally.statuses[f"refusal poll {status}"] += 1
        await asyncio.sleep(POLL_S)
    return None


async def measure_refusal(
    n: int, kind: str, subject: Subject, bases: list[str], admin: Admin, tally: Tally
) -> None:
    async with _session(subject.address) as session:
        if not await _accepted(session, bases, subject.key):
            tally.fail("setup", f"round {n}: refusal key not accepted")
            return
        t0 = time.perf_counter()
        lock = asyncio.ensure_future(admin.lock(kind, subject.target(kind)))
        polls = [_until_refused(session, base, subject.key, t0, tally) for base in bases]
        times = await asyncio.gather(*polls)
        try:
            lock_id = await lock
        except RuntimeError as exc:
            tally.fail("refusal", f"round {n}: {exc}")
            return
        for index, took in enumerate(times):
            if took is None:
                tally.fail("refusal", f"round {n} {kind} gateway {index}: no 403 within timeout")
            else:
                tally.add("refusal", _where(index), kind, took)
        if not await admin.lift(lock_id):
            tally.fail("lift", f"round {n}: lift {lock_id} failed")


@dataclass
class Stream:
    """One streaming call as the client sees it."""

    events: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None
    error_at: float | None = None
    error_code: str | None = None
    end_at: float | None = None
    done_marker: bool = False
    trouble: str | None = None


async def _read_stream(session: aiohttp.ClientSession, base: str, key: str, out: Stream) -> None:
    body = {
        "model": "s",
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "stream": True,
    }
    try:
        async with session.post(
            f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as resp:
            out.status = resp.status
            if resp.status != 200:
                out.trouble = f"status {resp.status}"
                return
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    out.done_marker = True
                    continue
                event = orjson.loads(payload)
                if isinstance(event, dict) and "error" in event:
                    out.error_at = time.perf_counter()
                    out.error_code = str(event["error"].get("code"))
                    continue
                out.events += 1
                if out.events >= CHUNKS_BEFORE_LOCK:
                    out.ready.set()
            out.end_at = time.perf_counter()
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        out.trouble = type(exc).__name__
        out.end_at = time.perf_counter()
    finally:
        out.ready.set()  # never leave the waiter hanging


async def measure_cut(
    n: int, kind: str, subject: Subject, bases: list[str], admin: Admin, tally: Tally
) -> None:
    async with _session(subject.address) as session:
        if not await _accepted(session, bases, subject.key):
            tally.fail("setup", f"round {n}: cut key not accepted")
            return
        streams = [Stream() for _ in bases]
        readers = [
            asyncio.ensure_future(_read_stream(session, base, subject.key, s))
            for base, s in zip(bases, streams, strict=True)
        ]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ROUND_TIMEOUT_S):
                    await asyncio.gather(*(s.ready.wait() for s in streams))
            started = [s.events >= CHUNKS_BEFORE_LOCK and s.end_at is None for s in streams]
            if not all(started):
                troubles = [s.trouble or f"{s.events} events" for s in streams]
                tally.fail("setup", f"round {n}: streams did not start: {troubles}")
                return
            t0 = time.perf_counter()
            try:
                lock_id = await admin.lock(kind, subject.target(kind))
            except RuntimeError as exc:
                tally.fail("cut", f"round {n}: {exc}")
                return
            await asyncio.wait(readers, timeout=ROUND_TIMEOUT_S)
            for index, s in enumerate(streams):
                label = f"round {n} {kind} gateway {index}"
                if s.error_at is None:
                    if s.end_at is None:
                        tally.fail("cut", f"{label}: stream not cut within timeout")
                    else:
                        tally.fail("cut", f"{label}: stream ended without an error event")
                    continue
                if s.error_code != "forbidden":
                    tally.fail("cut", f"{label}: error event code {s.error_code!r}")
                    continue
                if s.end_at is None:
                    tally.fail("cut", f"{label}: error event but the stream did not end")
                    continue
                if s.done_marker:
                    tally.statuses["cut stream sent [DONE]"] += 1
                tally.add("cut", _where(index), kind, s.error_at - t0)
                tally.add("cut_end", _where(index), kind, s.end_at - t0)
                tally.add("end_after_event", _where(index), kind, s.end_at - s.error_at)
            if not await admin.lift(lock_id):
                tally.fail("lift", f"round {n}: lift {lock_id} failed")
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _log_trouble(paths: list[Path]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if any(w in line for w in ("Traceback", "ERROR", "CRITICAL", "Exception")):
                    lines.append(f"{path.name}: {line.strip()[:300]}")
    return lines


def _start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(
    rounds: int, gateways: int, max_seconds: float, root: Path, settled: float
) -> dict[str, Any]:
    run_deadline = time.monotonic() + max_seconds
    source = _commit()  # the gateway runs whatever src/ holds when it starts
    done = init(root / "data")
    admin_key = enroll_locally(done.settings, done.codes[0].code.reveal())
    directory = open_directory(done.settings, actor="bench")
    fast_port, slow_port = free_port(), free_port()
    logs: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    tally = Tally()
    rounds_done = 0
    load_before = os.getloadavg()
    cpu_before, busy_before, wall_before = os.times(), machine_busy_ticks(), time.monotonic()
    try:
        for name, port, extra in (
            ("mock-fast", fast_port, []),
            (
                "mock-slow",
                slow_port,
                ["--tokens", str(SLOW_TOKENS), "--chunk-delay-ms", str(SLOW_CHUNK_DELAY_MS)],
            ),
        ):
            logs.append(root / f"{name}.log")
            procs.append(
                _start([*GARRISON, "mock-upstream", "--port", str(port), *extra], logs[-1])
            )
        now = time.time()
        for model, port in (("m", fast_port), ("s", slow_port)):
            directory.create_model(
                model,
                upstream_url=f"http://127.0.0.1:{port}/v1",
                upstream_model="mock-small",
                api=UpstreamApi.OPENAI,
                auth_style=AuthStyle.NONE,
                level=Level.INTERNAL,
                now=now,
            )
        bases = []
        for index in range(gateways):
            port = free_port()
            logs.append(root / f"gateway{index}.log")
            env = {**os.environ, "GARRISON_PORT": str(port)}
            procs.append(
                _start([*GARRISON, "serve", "--config", str(done.config_path)], logs[-1], env)
            )
            bases.append(f"http://127.0.0.1:{port}")
        wait_url(f"http://127.0.0.1:{fast_port}/v1/models")
        wait_url(f"http://127.0.0.1:{slow_port}/v1/models")
        for base in bases:
            wait_url(f"{base}/healthz")
        async with _session() as admin_session:
            admin = Admin(admin_session, bases[0], admin_key.key.token.reveal())
            for n in range(rounds):
                if time.monotonic() > run_deadline:
                    break
                kind = KINDS[n % len(KINDS)]
                first = _make_subject(directory, f"r{n}", _address(2 * n))
                await measure_refusal(n, kind, first, bases, admin, tally)
                second = _make_subject(directory, f"c{n}", _address(2 * n + 1))
                await measure_cut(n, kind, second, bases, admin, tally)
                rounds_done += 1
    finally:
        _stop(procs)
        directory.engine.dispose()
    load_after = os.getloadavg()
    cpu_after, busy_after = os.times(), machine_busy_ticks()
    wall = time.monotonic() - wall_before
    own = sum(cpu_after[:4]) - sum(cpu_before[:4])  # user, system, children user, system
    busy = (busy_after - busy_before) / CLK_TCK
    result: dict[str, Any] = {
        "source": source,
        "source_changed_during_run": _commit() != source,
        "busy_cores_at_start": round(settled, 2),
        "rounds": rounds,
        "rounds_done": rounds_done,
        "gateways": gateways,
        "kinds": list(KINDS),
        "poll_ms": POLL_S * 1000,
        "chunks_before_lock": CHUNKS_BEFORE_LOCK,
        "slow_upstream": {"tokens": SLOW_TOKENS, "chunk_delay_ms": SLOW_CHUNK_DELAY_MS},
        "cpus": os.cpu_count(),
        "loadavg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "wall_s": round(wall, 1),
        "machine_busy_cores": round(busy / wall, 2),
        "own_cores": round(own / wall, 2),
        "other_cores": round(max(0.0, busy - own) / wall, 2),
        "target_p99_ms": TARGET_MS,
    }
    wheres = ["same_process", "other_process"] if gateways > 1 else ["same_process"]
    for measure_name in ("refusal", "cut", "cut_end", "end_after_event"):
        result[measure_name] = {
            w: _stats(tally.samples.get(f"{measure_name}/{w}", [])) for w in wheres
        }
    result["by_kind"] = {
        m: {
            w: {
                k: {
                    x: v
                    for x, v in _stats(tally.by_kind.get(f"{m}/{w}/{k}", [])).items()
                    if x != "p99_ms"
                }
                for k in KINDS
            }
            for w in wheres
        }
        for m in ("refusal", "cut")
    }
    result["admin_lock_call"] = _stats(admin.lock_call_s) if rounds_done else _stats([])
    result["failures"] = {k: tally.failures.get(k, 0) for k in ("setup", "refusal", "cut", "lift")}
    result["failure_notes"] = tally.notes
    result["unexpected"] = dict(tally.statuses)
    result["gateway_log_trouble"] = _log_trouble(logs)[:LOG_LINES_KEPT]
    verdict = {}
    for measure_name in ("refusal", "cut"):
        for w in wheres:
            p99 = result[measure_name][w]["p99_ms"]
            ok = p99 is not None and p99 <= TARGET_MS and tally.failures[measure_name] == 0
            verdict[f"{measure_name}/{w}"] = "met" if ok else "missed"
    result["verdict"] = verdict
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--gateways", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--max-seconds", type=float, default=240.0, help="no new round starts after this"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=30.0,
        help="wait at most this long for a quiet machine first (0: do not wait)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settled = wait_for_quiet(max_wait_s=args.settle_seconds) if args.settle_seconds > 0 else -1.0
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(
            measure(args.rounds, args.gateways, args.max_seconds, Path(tmp), settled)
        )
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    print(text.decode())
    if args.json:
        args.json.write_bytes(text)


if __name__ == "__main__":
    main()
