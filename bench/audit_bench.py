"""Audit log benchmarks: durable append throughput and latency, verification speed, and
proof sizes and times on a 10-million-event synthetic log.

    python bench/audit_bench.py [--quick] [--json OUT]

Method (recorded in docs/benchmarks.md):
* append: the real ``AuditLog`` + ``SqliteAuditSink`` (WAL, synchronous=FULL, group commit,
  Merkle tree, a signed checkpoint each second) on a fresh database; C coroutines each
  ``await log.append(event)`` in a loop (the data plane's call), for a fixed event count.
  Throughput = events / wall time; latency = per-append wall time (p50/p99).
* verify: ``AuditReader`` + ``verify_log`` over the log just written (rows read from SQLite,
  every leaf re-hashed, the tree rebuilt, every checkpoint's signature and root checked).
* proofs: 10M synthetic leaves (hashes of distinct 500-byte records) held in memory;
  inclusion proofs at random indices and a consistency proof; sizes in hashes and bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from garrison.audit import AuditEvent, EventName
from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.merkle import (
    LeafHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from garrison.audit.parallel_verify import verify_parallel
from garrison.audit.sqlite_reader import AuditReader
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.verify import verify_log
from garrison.audit.writer import AuditLog
from garrison.store import make_engine, migrate


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        EventName.REQUEST_ALLOWED,
        at=time.time(),
        actor="prn_0123456789abcdef",
        request_id=f"0b5e5b0e-6a1f-4d6e-9d43-{i:012d}",
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
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_append(root: Path, events: int, concurrency: int) -> dict[str, Any]:
    db = root / "audit.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    sink = SqliteAuditSink(db, signer=Signer.from_dir(keys))
    log = AuditLog(sink)
    log.start()
    latencies: list[float] = []
    per_worker = events // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            ev = _event(w * per_worker + i)
            t0 = time.perf_counter()
            await log.append(ev)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    await asyncio.to_thread(log.close)
    return {
        "events": per_worker * concurrency,
        "concurrency": concurrency,
        "events_per_s": per_worker * concurrency / wall,
        "p50_ms": _pct(latencies, 0.5) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "db": str(db),
        "keys": str(keys),
    }


def bench_verify(db: Path, keys: Path) -> dict[str, Any]:
    signer = Signer.from_dir(keys)
    with AuditReader(db) as reader:
        n = reader.count()
        t0 = time.perf_counter()
        report = verify_log(reader.rows(), reader.checkpoints(), signer.public_keys())
        wall = time.perf_counter() - t0
    assert report.ok, report.problems[:3]
    return {
        "events": n,
        "checkpoints": report.checkpoints,
        "events_per_s": n / wall,
        "seconds": wall,
    }


def bench_verify_large(root: Path, events: int) -> dict[str, Any]:
    """A log of ``events`` written in large batches (fast to build), verified sequentially
    and with the multi-process fast path that `garrison audit verify` uses on big logs."""
    db = root / "large.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    keys = root / "large-keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    signer = Signer.from_dir(keys)
    sink = SqliteAuditSink(db, signer=signer)
    sink.open()
    batch = [_event(i) for i in range(5000)]
    for n in range(events // len(batch)):
        sink.write_batch(batch)
        if n % 20 == 0:
            sink.checkpoint()
    sink.close()
    public = signer.public_keys()
    with AuditReader(db) as reader:
        count = reader.count()
        checkpoints = reader.checkpoints()
        t0 = time.perf_counter()
        report = verify_log(reader.rows(), checkpoints, public)
        sequential = time.perf_counter() - t0
    assert report.ok
    t0 = time.perf_counter()
    fast = verify_parallel(db, count, checkpoints, public, jobs=os.cpu_count() or 2)
    parallel = time.perf_counter() - t0
    assert fast is not None and fast.root == report.root
    return {
        "events": count,
        "checkpoints": len(checkpoints),
        "sequential_events_per_s": count / sequential,
        "parallel_events_per_s": count / parallel,
    }


def bench_proofs(size: int, samples: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    base = os.urandom(468)
    hashes = [leaf_hash(base + i.to_bytes(32, "big")) for i in range(size)]
    build = time.perf_counter() - t0
    source = LeafHashes(hashes)
    t0 = time.perf_counter()
    root = source(0, size)
    first_root = time.perf_counter() - t0
    rng = random.Random(1)
    times: list[float] = []
    lengths: list[int] = []
    for _ in range(samples):
        index = rng.randrange(size)
        t0 = time.perf_counter()
        proof = inclusion_proof(index, size, source)
        times.append(time.perf_counter() - t0)
        lengths.append(len(proof))
        verify_inclusion(hashes[index], index, size, proof, root)
    t0 = time.perf_counter()
    vt = []
    for _ in range(samples):
        index = rng.randrange(size)
        proof = inclusion_proof(index, size, source)
        t1 = time.perf_counter()
        verify_inclusion(hashes[index], index, size, proof, root)
        vt.append(time.perf_counter() - t1)
    old = size // 3 + 7
    t0 = time.perf_counter()
    cproof = consistency_proof(old, size, source)
    ctime = time.perf_counter() - t0
    verify_consistency(old, size, root_of(hashes[:old]), root, cproof)
    return {
        "log_size": size,
        "build_leaf_hashes_s": build,
        "first_root_s": first_root,
        "inclusion_proof_hashes": max(lengths),
        "inclusion_proof_bytes": max(lengths) * 32,
        "inclusion_proof_ms_median": statistics.median(times) * 1000,
        "inclusion_verify_us_median": statistics.median(vt) * 1e6,
        "consistency_proof_hashes": len(cproof),
        "consistency_proof_ms": ctime * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    events = 20_000 if args.quick else 300_000
    proof_size = 100_000 if args.quick else 10_000_000
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        for conc in (1, 32, 256):
            root = Path(tmp) / f"c{conc}"
            root.mkdir()
            count = events if conc > 1 else min(events, 5_000)
            results[f"append_c{conc}"] = run(bench_append(root, count, conc))
        last = results["append_c256"]
        results["verify"] = bench_verify(Path(last.pop("db")), Path(last.pop("keys")))
        results["verify_large"] = bench_verify_large(
            Path(tmp), 100_000 if args.quick else 1_000_000
        )
        for key in ("append_c1", "append_c32"):
            results[key].pop("db")
            results[key].pop("keys")
    results["proofs"] = bench_proofs(proof_size, 200)
    for name, value in results.items():
        print(f"{name}: {value}")
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
