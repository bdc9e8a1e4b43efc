"""Lock propagation across replicas: from a lock placed on one replica to refusal on the
others and to a live stream cut on another.

    python bench/lock_propagation.py [--rounds 50] [--replicas 3] [--sqlite] [--json OUT]

``--replicas`` ``garrison serve`` processes share one database (PostgreSQL by default: a
database of its own on ``GARRISON_BENCH_PG``, made for the run and dropped after it; with
``--sqlite`` one SQLite file, which the replicas poll) and one mock upstream. Set-up: the
key files, schema and first admin are made as ``garrison init`` makes them; everything
after goes through replica A's admin API (two models, a service account, its key).

Each round opens a live stream on replica B (the mock's endless ``slow-stream``) and waits
for its first events; then, at t0, sends ``POST /admin/v1/locks`` (a lock on the service
account) to replica A, and at once polls replicas B and C (and the others) with calls every
``POLL_S`` until each answers 403, while reading the stream on B until it ends. Figures per
round: t0 → the first 403 from each of the other replicas, t0 → the end of B's stream, and
t0 → A's answer to the admin call; on PostgreSQL the bench also LISTENs on the change
feed's channel itself, so it knows when the lock's transaction committed, and reports
commit → refusal and commit → cut apart (the propagation alone, without the admin call's
own work before its commit). The lock is then lifted through A and the round waits
until every replica serves again. p50/p99/max over the rounds are printed as JSON.
Everything runs on 127.0.0.1, is bounded in rounds and time, and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.replicas import init_postgres
from tests.support.serve_processes import (
    spawn_mock_upstream,
    spawn_replica,
    stop_processes,
    write_serve_config,
)

from bench.loadgen import free_port, wait_url
from garrison.bootstrap import init
from garrison.store.change_feed import CHANNEL, pg_conninfo

# Where the bench makes (and drops) its PostgreSQL database.
ADMIN_URL = os.environ.get("GARRISON_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Longest wait for one refusal or cut before the round counts as failed (inf).
ROUND_TIMEOUT_S = 5.0
# Interval between the probing calls on each replica (the measurement's resolution; a
# shorter one only adds load to the two shared cores).
POLL_S = 0.002
# Stream events read on B before the lock is placed (the stream is live).
STREAM_EVENTS_FIRST = 2
# Longest wait for the bench's own listener to report a commit it has not reported yet.
HEARD_WAIT_S = 2.0
# Longest wait for every replica to serve again after a lift.
RECOVER_S = 10.0


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new database ``garrison_bench_<random>`` on ``ADMIN_URL`` for one run; dropped on
    the way out, whatever ended the run (its sessions are ended first). Yields its URL."""
    name = f"garrison_bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class CommitClock:
    """Listens on the change feed's channel like a replica: when each directory write
    committed (PostgreSQL delivers a notification on commit), as ``perf_counter`` times."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(pg_conninfo(url), autocommit=True)
        self._conn.execute(f"LISTEN {CHANNEL}")
        self.heard: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in self._conn.notifies(timeout=0.2):
                self.heard.append(time.perf_counter())

    async def heard_after(self, t0: float) -> float | None:
        """The first notification heard since ``t0`` (waiting up to ``HEARD_WAIT_S`` for
        the listening thread, which may not have run yet on a busy machine)."""
        deadline = time.perf_counter() + HEARD_WAIT_S
        while True:
            found = min((t for t in self.heard if t >= t0), default=None)
            if found is not None or time.perf_counter() > deadline:
                return found
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


async def call(session: aiohttp.ClientSession, base: str, key: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with session.post(
        f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as resp:
        await resp.read()
        return resp.status


async def until_status(
    session: aiohttp.ClientSession, base: str, key: str, status: int, t0: float, limit: float
) -> float:
    while time.perf_counter() - t0 < limit:
        if await call(session, base, key) == status:
            return time.perf_counter() - t0
        await asyncio.sleep(POLL_S)
    return float("inf")


async def admin(
    session: aiohttp.ClientSession, base: str, key: str, method: str, path: str, body: Any
) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with session.request(
        method, f"{base}/admin/v1{path}", json=body, headers=headers
    ) as resp:
        payload = await resp.read()
        if resp.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {resp.status} {payload[:200]!r}")
        return orjson.loads(payload)


async def open_stream(
    session: aiohttp.ClientSession, base: str, key: str
) -> aiohttp.ClientResponse:
    body = {"model": "m-slow", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    resp = await session.post(
        f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    if resp.status != 200:
        raise RuntimeError(f"stream refused: {resp.status}")
    seen = 0
    while seen < STREAM_EVENTS_FIRST:
        line = await resp.content.readline()
        if not line:
            raise RuntimeError("stream ended before the lock")
        seen += line.startswith(b"data:")
    return resp


async def until_cut(resp: aiohttp.ClientResponse, t0: float) -> float:
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            while await resp.content.readline():
                pass
        return time.perf_counter() - t0
    except TimeoutError:
        return float("inf")
    finally:
        resp.close()


async def timed(work: Any, t0: float, into: list[float]) -> Any:
    """Await ``work``; note the seconds from ``t0`` to its answer in ``into``."""
    answer = await work
    into.append(time.perf_counter() - t0)
    return answer


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def seed(
    session: aiohttp.ClientSession, bases: list[str], admin_key: str, up_port: int
) -> str:
    """Through replica A's admin API: the models ``m`` and ``m-slow`` on the mock at
    ``up_port`` and the service account ``svc``; returns its key once every replica takes it."""
    a = bases[0]
    upstream = f"http://127.0.0.1:{up_port}/v1"
    for name, model in (("m", "mock-small"), ("m-slow", "slow-stream")):
        body = {"name": name, "upstream_url": upstream, "upstream_model": model}
        await admin(session, a, admin_key, "POST", "/models", body | {"auth_style": "none"})
    await admin(
        session,
        a,
        admin_key,
        "POST",
        "/principals",
        {"name": "svc", "org": "internal", "kind": "service"},
    )
    key: str = (await admin(session, a, admin_key, "POST", "/keys", {"principal": "svc"}))["key"]
    for base in bases:
        if await until_status(session, base, key, 200, time.perf_counter(), RECOVER_S) > 9:
            raise RuntimeError(f"{base} never learnt the key")
    return key


async def lock_rounds(
    session: aiohttp.ClientSession,
    bases: list[str],
    admin_key: str,
    key: str,
    n: int,
    clock: CommitClock | None,
) -> dict[str, list[float]]:
    """``n`` rounds (lock through A, refusal and cut elsewhere, lift); the samples in seconds.
    With one replica, A is also where the stream runs and the refusal is probed."""
    a = bases[0]
    others = bases[1:] or bases[:1]
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "refused_on_others",
            "refused_on_all_others",
            "stream_cut_on_b",
            "admin_call_answered_on_a",
            "commit_to_refused_on_others",
            "commit_to_stream_cut_on_b",
        )
    }
    for _ in range(n):
        stream = await open_stream(session, others[0], key)
        t0 = time.perf_counter()
        lock_call = admin(
            session,
            a,
            admin_key,
            "POST",
            "/locks",
            {"kind": "principal", "target": "svc", "reason": "bench"},
        )
        lock, cut_s, *refused = await asyncio.gather(
            timed(lock_call, t0, samples["admin_call_answered_on_a"]),
            until_cut(stream, t0),
            *(until_status(session, b, key, 403, t0, ROUND_TIMEOUT_S) for b in others),
        )
        samples["stream_cut_on_b"].append(cut_s)
        samples["refused_on_others"].extend(refused)
        samples["refused_on_all_others"].append(max(refused))
        committed = await clock.heard_after(t0) if clock is not None else None
        if committed is not None:
            samples["commit_to_refused_on_others"].extend(t0 + x - committed for x in refused)
            samples["commit_to_stream_cut_on_b"].append(t0 + cut_s - committed)
        await admin(session, a, admin_key, "POST", f"/locks/{lock['id']}/lift", {"reason": "x"})
        for base in bases:
            await until_status(session, base, key, 200, time.perf_counter(), RECOVER_S)
    return samples


def lock_figures(samples: dict[str, list[float]]) -> dict[str, Any]:
    """p50/p99/max of each figure that has samples."""
    return {k: summary(v) for k, v in samples.items() if v}


async def rounds(
    bases: list[str], admin_key: str, up_port: int, n: int, clock: CommitClock | None
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        key = await seed(session, bases, admin_key, up_port)
        samples = await lock_rounds(session, bases, admin_key, key, n, clock)
    return lock_figures(samples)


async def measure(rounds_n: int, replicas: int, sqlite: bool, root: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if sqlite:
            done = init(root / "data")
            url, key_dir = done.settings.database_url, done.settings.key_dir
            code = done.codes[0].code.reveal()
        else:
            url = stack.enter_context(postgres_database())
            settings, code = init_postgres(root, url)
            key_dir = settings.key_dir
        config = write_serve_config(root, url, key_dir)
        up_port = free_port()
        procs = [spawn_mock_upstream(up_port)]
        try:
            bases = []
            for _ in range(replicas):
                proc, base = spawn_replica(config, env=os.environ)
                procs.append(proc)
                bases.append(base)
            wait_url(f"http://127.0.0.1:{up_port}/v1/models")
            for base in bases:
                wait_url(f"{base}/healthz", timeout=60)
            async with aiohttp.ClientSession() as session:
                enrolled = await admin(session, bases[0], "", "POST", "/enroll", {"code": code})
            clock = None if sqlite else CommitClock(url)
            try:
                figures = await rounds(bases, enrolled["key"], up_port, rounds_n, clock)
            finally:
                if clock is not None:
                    clock.close()
        finally:
            stop_processes(procs, timeout=15)
    return {
        "database": "sqlite" if sqlite else "postgresql",
        "replicas": replicas,
        "rounds": rounds_n,
        "poll_s": POLL_S,
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sqlite", action="store_true", help="one SQLite file (polling)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.replicas < 2:
        parser.error("--replicas: at least 2 (A places the lock, B streams)")
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.rounds, args.replicas, args.sqlite, Path(tmp)))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
