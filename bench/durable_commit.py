"""One durable commit: what a one-row SQLite commit with fsync costs on this disk.

    python bench/durable_commit.py [--commits N] [--dir DIR] [--segment] [--rounds R]

The gateway forwards an allowed call only after its audit record is committed, so one
durable commit is part of the floor under its added latency at concurrency 1 (issue 18
judges the added p50 against "bare forwarder + one durable commit"). This times ``commits``
one-row commits to a fresh SQLite file in ``directory``, which ``bench/gateway_bench.py``
puts beside the gateway's own audit database (same file system, same disk), with:

* the connection settings every gateway connection gets
  (``garrison.store.db.apply_sqlite_pragmas``: WAL, ``synchronous=FULL``, the same
  ``wal_autocheckpoint`` and ``journal_size_limit``), and no implicit transactions from the
  driver (``isolation_level=None``), as the audit sink opens it;
* the audit writer's transaction shape: ``BEGIN IMMEDIATE``, one ``INSERT``, ``COMMIT``
  (the commit appends to the WAL and fsyncs it).

Each commit is timed from ``BEGIN IMMEDIATE`` to ``COMMIT`` returning. The row is shaped like
an ``audit_events`` row (sequence, time, name, request id, record bytes; the request id
indexed), with none of the audit log's hashing or signing: this is the disk's part alone.
The WAL folds back into the file every ``wal_autocheckpoint`` pages, as in the gateway, so
the p99 includes checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import summarize_ns

# Commits timed per run: 2,000 fill about two WAL autocheckpoints (1,000 pages each), so the
# p99 sees the checkpoints the gateway's audit log also pays, and the run stays ~1 s on SSD.
COMMITS = 2000
# Commits made first and not timed: the file, the WAL and the page cache settle.
WARMUP_COMMITS = 50
# Bytes of the record column: the order of one audit record. Below a page (4 KiB) the size
# hardly moves the commit's cost, which is the WAL append and its fsync.
RECORD_BYTES = 600
# The database file's name inside the directory (removed afterwards, with its WAL).
DB_NAME = "durable-commit-bench.db"
# The append-only file of ``--segment`` (removed afterwards).
SEGMENT_NAME = "durable-commit-bench.segment"

_SCHEMA = (
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
    "name TEXT NOT NULL, request_id TEXT, record BLOB NOT NULL)",
    "CREATE INDEX ix_events_request_id ON events (request_id)",
)
# PRAGMA synchronous's answer, named.
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_INSERT = "INSERT INTO events (at, name, request_id, record) VALUES (?, ?, ?, ?)"


def _commit_one(conn: sqlite3.Connection, index: int, record: bytes) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(_INSERT, (time.time(), "request.allowed", f"req-{index:032x}", record))
    conn.execute("COMMIT")


def measure_commits(
    directory: Path, commits: int = COMMITS, warmup: int = WARMUP_COMMITS
) -> dict[str, Any]:
    """Time ``commits`` one-row durable commits to a new database in ``directory``.

    Returns p50/p90/p99/max/mean in milliseconds, the count and the directory."""
    from garrison.store.db import apply_sqlite_pragmas

    path = directory / DB_NAME
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    for leftover in files:
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    timings: list[int] = []
    try:
        apply_sqlite_pragmas(conn)
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        for statement in _SCHEMA:
            conn.execute(statement)
        record = os.urandom(RECORD_BYTES)
        for index in range(warmup):
            _commit_one(conn, index, record)
        cpu0 = time.thread_time_ns()
        for index in range(warmup, warmup + commits):
            t0 = time.perf_counter_ns()
            _commit_one(conn, index, record)
            timings.append(time.perf_counter_ns() - t0)
        cpu_ns = time.thread_time_ns() - cpu0
    finally:
        conn.close()
        for leftover in files:
            leftover.unlink(missing_ok=True)
    return {
        "commits": commits,
        "directory": str(directory),
        "journal_mode": mode,
        "synchronous": synchronous,  # 2 is FULL
        # The committing thread's CPU (user + system: the fsync's kernel work included).
        "cpu_ms": cpu_ns / commits / 1e6,
        **summarize_ns(timings),
    }


def measure_segment(
    directory: Path, commits: int = COMMITS, warmup: int = WARMUP_COMMITS
) -> dict[str, Any]:
    """The same number of durable appends to a preallocated append-only file instead:
    ``pwrite`` of one record-sized block, then ``fdatasync``. Issue 18 lists an append-only
    segment with SQLite indexing behind it as a candidate for the durable part; this is the
    disk's part of that design alone (no framing, no checksum, no index)."""
    path = directory / SEGMENT_NAME
    record = os.urandom(RECORD_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    timings: list[int] = []
    try:
        # Preallocated and synced first, so each fdatasync writes data, not the file's size.
        os.posix_fallocate(fd, 0, (warmup + commits) * RECORD_BYTES)
        os.fsync(fd)
        offset = 0
        for _ in range(warmup):
            os.pwrite(fd, record, offset)
            os.fdatasync(fd)
            offset += RECORD_BYTES
        cpu0 = time.thread_time_ns()
        for _ in range(commits):
            t0 = time.perf_counter_ns()
            os.pwrite(fd, record, offset)
            os.fdatasync(fd)
            timings.append(time.perf_counter_ns() - t0)
            offset += RECORD_BYTES
        cpu_ns = time.thread_time_ns() - cpu0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {
        "commits": commits,
        "directory": str(directory),
        "cpu_ms": cpu_ns / commits / 1e6,
        **summarize_ns(timings),
    }


def describe(result: Mapping[str, Any]) -> str:
    synchronous = SYNCHRONOUS.get(result["synchronous"], result["synchronous"])
    return (
        f"{result['commits']} one-row commits (journal_mode={result['journal_mode']}, "
        f"synchronous={synchronous}): p50 {result['p50']:.3f} ms, "
        f"p99 {result['p99']:.3f} ms, max {result['max']:.3f} ms"
        + (f", {result['cpu_ms']:.3f} ms of CPU each" if "cpu_ms" in result else "")
    )


def describe_segment(result: Mapping[str, Any]) -> str:
    return (
        f"{result['commits']} appends to a preallocated file, each followed by fdatasync: "
        f"p50 {result['p50']:.3f} ms, p99 {result['p99']:.3f} ms, max {result['max']:.3f} ms, "
        f"{result['cpu_ms']:.3f} ms of CPU each"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=COMMITS)
    parser.add_argument(
        "--dir", type=Path, help="where the database goes (default: a new temporary directory)"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--segment",
        action="store_true",
        help="also time appends + fdatasync to a preallocated file (issue 18's candidate)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat, alternating the two")
    opts = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="garrison-commit-") as tmp:
        directory = opts.dir if opts.dir is not None else Path(tmp)
        for _ in range(opts.rounds):
            result = measure_commits(directory, opts.commits)
            print(describe(result))
            results.append(result)
            if opts.segment:
                segment = measure_segment(directory, opts.commits)
                print(describe_segment(segment))
                results.append({"segment": True, **segment})
    if opts.json:
        opts.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
