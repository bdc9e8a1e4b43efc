"""Audit append throughput on PostgreSQL with 1 and 3 replica processes, beside SQLite with one.

    python bench/pg_append.py [--seconds 10] [--batch 500] [--json OUT]

Method (recorded in docs/benchmarks.md): each replica is a separate process with its own
sink (``garrison.audit.sinks.open_sink``, the gateway's: PostgreSQL's takes the log's
advisory lock per batch transaction, folds the others' rows, appends, signs a checkpoint
each second), writing batches of ``--batch`` prepared events (``AuditEvent.prepare``, as
the gateway encodes an event when it appends it) back to back: the writer's group commit
under a load that always has a full batch waiting. All replicas start together and stop
after ``--seconds``; events/s = events committed by all / the slowest replica's wall time.
CPU per event is the writers' own (``process_time``) plus, for PostgreSQL on this host, the
database server processes serving them (``/proc/PID/stat``); "lock busy" is the share of the
run some replica held the log's write lock. Each run gets a fresh database (PostgreSQL:
``GARRISON_TEST_PG``'s server, a database made and dropped here; SQLite: a temporary file).
The log is verified after each run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit import tree_sink
from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.events import AuditEvent, EventName
from garrison.audit.sinks import open_sink
from garrison.audit.sqlite_reader import open_reader
from garrison.audit.verify import verify_log
from garrison.store import make_engine, migrate

ADMIN_URL = os.environ.get("GARRISON_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The run's start is this far after the workers are spawned, so all begin at once.
START_DELAY_S = 3.0


def _event(name: str, i: int) -> AuditEvent:
    return AuditEvent(
        EventName.REQUEST_ALLOWED,
        at=time.time(),
        actor="prn_0123456789abcdef",
        request_id=f"{name}-{i:012d}",
        principal_id="prn_0123456789abcdef",
        credential_id="0123456789abcdef",
        model="assistant",
        data={
            "endpoint": "chat",
            "client_address": "127.0.0.1",
            "org_id": "org_01234567",
            "body_sha256": "ab" * 32,
            "body_bytes": 512,
            "reasons": ["allowed"],
            "stream": False,
            "upstream_model": "mock-small",
            "level": "internal",
        },
    ).prepare()


def _backend_cpu(pid: int | None) -> float:
    """CPU seconds the database server process ``pid`` has used (PostgreSQL on this host)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _replica(args: tuple[str, str, str, int, float, float]) -> dict[str, float]:
    url, key_dir, name, batch, start_at, seconds = args
    sink = open_sink(url, signer=Signer.from_dir(Path(key_dir)))
    sink.open()
    # Time under the log's write lock: from the fold's answer (the lock was granted just
    # before it: PostgreSQL's pipeline sends the two together) to the commit's return.
    held = [0.0, 0.0]
    fold, commit = getattr(tree_sink, "fold"), sink._commit_tx  # noqa: B009

    def timed_fold(*args: Any) -> int:
        folded = int(fold(*args))
        held[1] = time.perf_counter()
        return folded

    def timed_commit(conn: Any) -> None:
        commit(conn)
        held[0] += time.perf_counter() - held[1]

    setattr(tree_sink, "fold", timed_fold)  # noqa: B010
    sink._commit_tx = timed_commit  # type: ignore[method-assign]
    conn = sink._connection()
    backend = getattr(getattr(conn, "info", None), "backend_pid", None)
    n = 0
    time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    cpu = time.process_time()
    server = _backend_cpu(backend)
    while time.perf_counter() - started < seconds:
        events = [_event(name, n + k) for k in range(batch)]
        sink.write_batch(events)
        n += batch
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    server = _backend_cpu(backend) - server
    sink.close()
    return {"events": n, "wall": wall, "cpu": cpu, "server_cpu": server, "held": held[0]}


def _pg_database() -> tuple[str, str]:
    name = f"garrison_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    return name, str(url)


def _drop_pg(name: str) -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(backend: str, replicas: int, batch: int, seconds: float, root: Path) -> dict[str, Any]:
    key_dir = root / f"keys-{backend}-{replicas}"
    key_dir.mkdir(mode=0o700)
    create_signing_key(key_dir)
    pg_name = None
    if backend == "postgresql":
        pg_name, url = _pg_database()
    else:
        url = f"sqlite:///{root / f'audit-{replicas}.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        start_at = time.time() + START_DELAY_S
        tasks = [(url, str(key_dir), f"r{k}", batch, start_at, seconds) for k in range(replicas)]
        with multiprocessing.get_context("spawn").Pool(replicas) as pool:
            results = pool.map(_replica, tasks)
        events = sum(int(r["events"]) for r in results)
        wall = max(r["wall"] for r in results)
        with open_reader(url) as reader:
            report = verify_log(
                reader.rows(), reader.checkpoints(), Signer.from_dir(key_dir).public_keys()
            )
        return {
            "backend": backend,
            "replicas": replicas,
            "batch": batch,
            "seconds": round(wall, 2),
            "events": events,
            "events_per_s": round(events / wall),
            "cpu_us_per_event": round(sum(r["cpu"] for r in results) / events * 1e6, 1),
            "server_cpu_us_per_event": round(
                sum(r["server_cpu"] for r in results) / events * 1e6, 1
            ),
            # Share of the run some replica held the log's write lock (1.0: the lock is the
            # limit; well below: the replicas' own work or the machine is).
            "lock_busy": round(sum(r["held"] for r in results) / wall, 2),
            "verified": report.ok and report.events == events,
            "checkpoints": report.checkpoints,
        }
    finally:
        if pg_name is not None:
            _drop_pg(pg_name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for backend, replicas in (("sqlite", 1), ("postgresql", 1), ("postgresql", 3)):
            row = run(backend, replicas, args.batch, args.seconds, root)
            rows.append(row)
            print(
                f"{backend:<11} replicas={replicas}  {row['events_per_s']:>8,} events/s"
                f"  ({row['events']:,} in {row['seconds']} s, batch {row['batch']},"
                f" CPU/event: {row['cpu_us_per_event']} µs writers"
                f" + {row['server_cpu_us_per_event']} µs database server,"
                f" lock busy {row['lock_busy']:.0%},"
                f" verified={row['verified']}, checkpoints={row['checkpoints']})",
                flush=True,
            )
    after = os.getloadavg()
    print(f"load average before {load[0]:.2f}, after {after[0]:.2f} on {os.cpu_count()} cores")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps({"runs": rows, "load": [load, after]}))
    if not all(r["verified"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
