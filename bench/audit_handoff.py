"""The audit hand-off at concurrency 1: how long ``await log.append(event)`` takes beyond
the commit itself.

    python bench/audit_handoff.py [--appends N] [--dir DIR]

Method (recorded in docs/benchmarks.md): the real ``AuditLog`` + ``SqliteAuditSink`` (WAL,
``synchronous=FULL``, a signed checkpoint each second published to a directory witness: the
shipped setup) on a new database in DIR, with a listener that
queues each batch as the detection feed does (a bounded ``queue.Queue``, drained every
20 ms by a thread, like ``DETECT_LINGER_S``), under uvloop. One coroutine appends N events
one after the other (after 50 untimed). For each append it takes the wall time from the call
to its return, and the time the writer spent in the ``COMMIT`` statement (the WAL append and
its fsync, timed around the sink's ``_commit_tx``). Their difference is the hand-off: the
queue put and the writer's wake-up, the batch's other statements and Python work, and the
wake-up of the loop (``call_soon_threadsafe``) — what the disk's noise leaves out. It prints
min/p25/p50/p90/p99.9/max of the three and the process CPU per append.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit_bench import _event
from garrison.audit import AuditEvent
from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.witness import DirectoryWitness
from garrison.audit.writer import AuditLog
from garrison.store import make_engine, migrate

APPENDS = 2000
WARMUP = 50
# The detection thread's pause between takes (``garrison.respond.monitor.DETECT_LINGER_S``).
FEED_LINGER_S = 0.02


class _TimedSink(SqliteAuditSink):
    """The sink, with the time of its last ``COMMIT`` statement kept."""

    last_commit_s = 0.0

    def _commit_tx(self, conn: Any) -> None:
        started = time.perf_counter()
        super()._commit_tx(conn)
        self.last_commit_s = time.perf_counter() - started


def _feed(sink: SqliteAuditSink) -> threading.Event:
    """A listener shaped like the detection feed; returns the event that stops its thread."""
    batches: queue.Queue[tuple[int, Sequence[AuditEvent]]] = queue.Queue(200)
    stop = threading.Event()

    def offer(first: int, events: Sequence[AuditEvent]) -> None:
        with contextlib.suppress(queue.Full):
            batches.put_nowait((first, events))

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.1)
                stop.wait(FEED_LINGER_S)
                while True:
                    batches.get_nowait()

    sink.add_listener(offer)
    threading.Thread(target=drain, name="feed", daemon=True).start()
    return stop


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(directory: Path, appends: int = APPENDS) -> dict[str, Any]:
    db = directory / "audit.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    keys = directory / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    sink = _TimedSink(
        db, signer=Signer.from_dir(keys), witness=DirectoryWitness(directory / "witness")
    )
    stop = _feed(sink)
    log = AuditLog(sink)
    log.start()
    total: list[float] = []
    commit: list[float] = []
    try:
        for i in range(WARMUP):
            await log.append(_event(i))
        cpu = time.process_time()
        for i in range(appends):
            event = _event(WARMUP + i)
            started = time.perf_counter()
            await log.append(event)
            total.append(time.perf_counter() - started)
            commit.append(sink.last_commit_s)
        cpu = time.process_time() - cpu
    finally:
        stop.set()
        await asyncio.to_thread(log.close)
    handoff = [t - c for t, c in zip(total, commit, strict=True)]
    figures: dict[str, Any] = {"appends": appends, "cpu_ms_per_append": 1000 * cpu / appends}
    for name, values in (("append_ack", total), ("commit", commit), ("handoff", handoff)):
        figures[name] = {
            q: 1000 * _pct(values, p)
            for q, p in (
                ("min", 0.0),
                ("p25", 0.25),
                ("p50", 0.5),
                ("p90", 0.9),
                ("p99.9", 0.999),
                ("max", 1.0),
            )
        }
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=APPENDS)
    parser.add_argument("--dir", type=Path, help="parent of the new database's directory")
    opts = parser.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="garrison-handoff-", dir=opts.dir) as tmp:
        figures = uvloop.run(measure(Path(tmp), opts.appends))
    print(f"{figures['appends']} appends, c=1 (ms):")
    for name in ("append_ack", "commit", "handoff"):
        row = figures[name]
        print(f"  {name:<11} " + "  ".join(f"{q} {v:.3f}" for q, v in row.items()))
    print(f"  process CPU per append: {figures['cpu_ms_per_append']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
