"""Losing a replica loses nothing (issue 17): three real ``garrison serve`` processes on one
PostgreSQL database and one mock upstream; under load, replica B is killed with SIGKILL in
the middle of an audit batch: its transaction open and holding the log's write lock (the
advisory lock every batch takes; the closest thing this design has to an integrator), so
A and C's batches are queued behind a dead writer.

What must hold: every call any replica answered 200 (B too, before it died) has its
``request.allowed`` record in the shared log (matched by the ``x-request-id`` each answer
carries); A and C keep answering 200, never refused while the lock passes on; ``garrison
audit verify`` passes (one tree, one chain of checkpoints: no gap, no fork) and the log's
``seq`` is contiguous; and the upstream saw no call whose record is missing (durability
before forwarding). Set-up goes through ``garrison init --database-url`` and replica A's
admin API only; the log is only read (the one intrusion: the test holds the write lock for
a moment, to catch B inside a batch).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from garrison.audit.pg_sink import AUDIT_PG_WRITE_LOCK, libpq_url
from garrison.audit.sqlite_reader import open_reader
from garrison.mock import MockConfig, MockUpstream
from tests.support import pg
from tests.support.replicas import init_postgres
from tests.support.serve_processes import (
    GARRISON,
    spawn_replica,
    stop_processes,
    write_serve_config,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="finds the victim's PostgreSQL session through /proc (Linux only)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3
VICTIM = 1  # replica B
# Client tasks per replica, each calling in a loop (bounded by the counts below).
CALLERS = 3
# B answers this many calls before it is killed (it is under load when it dies).
BEFORE_KILL = 60
# A and C each answer this many calls after the kill (they keep serving).
AFTER_KILL = 60
# Longest any phase may take before the test fails instead of hanging (a loaded 2-core
# machine starts three gateways in a few seconds; the whole test stays well under 60 s).
GUARD_S = 40.0
# How long to try catching B inside an audit batch (holding the log's write lock) before
# killing it anyway (a try normally succeeds at once).
CATCH_WITHIN_S = 10.0
# Longest the test itself holds the write lock waiting for B's next batch to queue behind
# it: well under the 1 s the replicas' batches wait for the lock (AUDIT_PG_LOCK_TIMEOUT_MS),
# so A and C are delayed, never refused.
HOLD_S = 0.25
# Longest wait for PostgreSQL to grant the lock to B's queued batch (A's and C's batches
# queued before it go first; each is short).
GRANT_S = 0.5
# Longest a replica may take to stop cleanly (SIGINT) before it is killed.
STOP_S = 20.0
# Per-call client timeout: generous, so a slow shared machine is not read as a failure.
CALL_TIMEOUT_S = 20.0


@dataclass
class Answer:
    replica: int
    status: int | None  # None: the connection failed (B after its death)
    request_id: str
    after_kill: bool


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    killed_at: float | None = None
    stop: bool = False

    def ok(self, replica: int, *, after_kill: bool) -> int:
        return sum(
            1
            for a in self.answers
            if a.replica == replica and a.status == 200 and a.after_kill == after_kill
        )


@pytest.fixture
def database() -> Iterator[str]:
    with pg.fresh_database() as url:
        yield url


async def _until_ready(session: aiohttp.ClientSession, base: str, proc: Any) -> None:
    deadline = time.monotonic() + GUARD_S
    while True:
        assert proc.poll() is None, f"{base}: garrison serve exited ({proc.returncode})"
        try:
            async with session.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{base} never became ready"
        await asyncio.sleep(0.05)


async def _admin(
    session: aiohttp.ClientSession, base: str, key: str, method: str, path: str, body: Any
) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with session.request(
        method, f"{base}/admin/v1{path}", json=body, headers=headers
    ) as resp:
        payload = await resp.read()
        assert resp.status in (200, 201), (method, path, resp.status, payload[:300])
        return orjson.loads(payload)


async def _chat(session: aiohttp.ClientSession, base: str, key: str) -> tuple[int, str]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(
        f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as resp:
        await resp.read()
        return resp.status, resp.headers.get("x-request-id", "")


async def _caller(
    session: aiohttp.ClientSession, replica: int, base: str, key: str, load: Load
) -> None:
    while not load.stop:
        after_kill = load.killed_at is not None
        try:
            status, request_id = await _chat(session, base, key)
        except (aiohttp.ClientError, TimeoutError):
            load.answers.append(Answer(replica, None, "", after_kill))
            if replica == VICTIM and load.killed_at is not None:
                return  # B is gone
            await asyncio.sleep(0.01)
            continue
        load.answers.append(Answer(replica, status, request_id, after_kill))


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _logged(url: str) -> tuple[list[int], list[dict[str, Any]]]:
    with open_reader(url) as reader:
        rows = list(reader.rows())
    return [int(seq) for seq, _, _ in rows], [orjson.loads(record) for _, record, _ in rows]


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid``'s sockets (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


_HOLDERS = (
    "SELECT l.granted FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s "
    "AND a.application_name = 'garrison-audit' AND a.client_port = ANY(%s)"
)


def _kill_inside_a_batch(proc: subprocess.Popen[bytes], url: str) -> bool:
    """``kill -9`` ``proc`` while its audit batch holds the log's write lock (its
    transaction open, its records uncommitted, the other replicas' batches waiting behind
    it). Made so, not waited for: the test holds the lock itself for a moment until
    ``proc``'s batch queues for it; stops ``proc`` (its batch stays queued in PostgreSQL);
    lets go; and kills ``proc`` once PostgreSQL has granted the lock to its session. A try
    that does not get that far lets ``proc`` go on and is repeated, within
    ``CATCH_WITHIN_S``. Returns whether it was caught so; killed either way."""
    key = (AUDIT_PG_WRITE_LOCK >> 32, AUDIT_PG_WRITE_LOCK & 0xFFFFFFFF)
    caught = False
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        deadline = time.monotonic() + CATCH_WITHIN_S
        while not caught and time.monotonic() < deadline:
            ports = list(_local_ports(proc.pid))
            conn.execute("SELECT pg_advisory_lock(%s)", (AUDIT_PG_WRITE_LOCK,))
            queued = _poll(conn, (*key, ports), lambda g: g == [False], HOLD_S)
            if queued:
                proc.send_signal(signal.SIGSTOP)
            conn.execute("SELECT pg_advisory_unlock(%s)", (AUDIT_PG_WRITE_LOCK,))
            if not queued:
                time.sleep(0.01)
                continue
            caught = _poll(conn, (*key, ports), lambda g: g == [True], GRANT_S)
            if not caught:  # its wait ran out (lock_timeout): let it go on, try again
                proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=GUARD_S)
    return caught


def _poll(conn: psycopg.Connection[Any], args: tuple[Any, ...], test: Any, within: float) -> bool:
    """Poll ``proc``'s audit session's hold on the write lock until ``test`` passes."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        granted = [bool(g) for (g,) in conn.execute(_HOLDERS, args).fetchall()]
        if test(granted):
            return True
        time.sleep(0.001)
    return False


async def test_a_replica_killed_under_load_loses_nothing_it_answered(
    database: str, tmp_path: Path
) -> None:
    settings, code = init_postgres(tmp_path, database)
    config = write_serve_config(tmp_path, database, settings.key_dir)
    mock = MockUpstream(MockConfig())
    await mock.start("127.0.0.1", 0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env["GARRISON_METRICS_LISTEN"] = ""
    procs: list[subprocess.Popen[bytes]] = []
    logs = [(tmp_path / f"replica{i}.log").open("wb") for i in range(REPLICAS)]
    bases: list[str] = []
    try:
        for i in range(REPLICAS):
            proc, base = spawn_replica(config, env=env, cwd=ROOT, output=logs[i])
            procs.append(proc)
            bases.append(base)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for base, proc in zip(bases, procs, strict=True):
                await _until_ready(session, base, proc)
            a = bases[0]
            admin_key = (await _admin(session, a, "", "POST", "/enroll", {"code": code}))["key"]
            model = {
                "name": "m",
                "upstream_url": f"{mock.base_url}/v1",
                "upstream_model": "mock-small",
                "auth_style": "none",
            }
            await _admin(session, a, admin_key, "POST", "/models", model)
            principal = {"name": "svc", "org": "internal", "kind": "service"}
            await _admin(session, a, admin_key, "POST", "/principals", principal)
            key = (await _admin(session, a, admin_key, "POST", "/keys", {"principal": "svc"}))[
                "key"
            ]
            for base in bases:  # every replica has the key (the change feed carried it)
                deadline = time.monotonic() + GUARD_S
                while (await _chat(session, base, key))[0] != 200:
                    assert time.monotonic() < deadline, f"{base} never learnt the key"
                    await asyncio.sleep(0.02)

            load = Load()
            tasks = [
                asyncio.create_task(_caller(session, i, base, key, load))
                for i, base in enumerate(bases)
                for _ in range(CALLERS)
            ]
            try:
                await _until(lambda: load.ok(VICTIM, after_kill=False) >= BEFORE_KILL, "B's load")
                load.killed_at = time.monotonic()
                # kill -9, mid-load and mid-batch: B holds the log's write lock.
                caught = _kill_inside_a_batch(procs[VICTIM], database)
                assert caught, "B was never caught inside a batch (killed anyway)"
                await _until(
                    lambda: all(
                        load.ok(i, after_kill=True) >= AFTER_KILL
                        for i in range(REPLICAS)
                        if i != VICTIM
                    ),
                    "A and C serving after the kill",
                )
            finally:
                load.stop = True
                await asyncio.wait_for(asyncio.gather(*tasks), GUARD_S)
        stop_processes([p for i, p in enumerate(procs) if i != VICTIM], timeout=STOP_S)
        assert all(p.returncode == 0 for i, p in enumerate(procs) if i != VICTIM), [
            p.returncode for p in procs
        ]

        # (3) One tree, one chain: verify passes; seq has no hole.
        verify = subprocess.run(
            [*GARRISON, "audit", "verify", "--json", "--no-witness", "--config", str(config)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=GUARD_S,
        )
        report = orjson.loads(verify.stdout)
        assert verify.returncode == 0 and report["ok"], (report, verify.stderr[-2000:])
        seqs, records = _logged(database)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] in (0, 1)
        assert report["events"] == len(seqs)
        allowed = [r["request_id"] for r in records if r.get("name") == "request.allowed"]
        assert len(allowed) == len(set(allowed))  # each call's record once
        allowed_ids = set(allowed)

        # (1) Nothing answered is missing: every 200, from any replica, B's included.
        answered = [a for a in load.answers if a.status == 200]
        assert all(a.request_id for a in answered)
        missing = [a for a in answered if a.request_id not in allowed_ids]
        assert not missing, missing[:5]
        by_b = [a for a in answered if a.replica == VICTIM]
        assert len(by_b) >= BEFORE_KILL

        # (2) A and C kept answering 200: nothing else from them, before or after the kill.
        others = [a for a in load.answers if a.replica != VICTIM]
        assert {a.status for a in others} == {200}, sorted(
            {str(a.status) for a in others if a.status != 200}
        )

        # (4) Durability before forwarding: the upstream saw no call that has no record.
        forwarded = [s.request_id for s in mock.seen if s.path == "/v1/chat/completions"]
        assert all(forwarded)
        assert len(forwarded) <= len(allowed_ids)
        unlogged = [rid for rid in forwarded if rid not in allowed_ids]
        assert not unlogged, unlogged[:5]
        print(
            f"answered 200: {len(answered)} ({len(by_b)} by B before its death); "
            f"forwarded {len(forwarded)}; request.allowed {len(allowed_ids)}; "
            f"log {len(seqs)} events, {report.get('checkpoints')} checkpoints; "
            f"B killed holding the audit lock: {caught}"
        )
    finally:
        stop_processes(procs, timeout=STOP_S)
        for f in logs:
            f.close()
        await mock.stop()
