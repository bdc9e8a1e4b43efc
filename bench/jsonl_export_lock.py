"""The JSON-lines export's lock: CPU per exported batch with and without it.

    python bench/jsonl_export_lock.py [--batches N] [--rounds R] [--dir DIR]

The audit writer thread hands each committed batch to the exporters, so what an export costs
is paid once per commit on the writer thread. This times ``batches`` exports of a batch of
``BATCH_RECORDS`` records (``RECORD_BYTES`` each) to a fresh file in ``directory`` with:

* ``before``: the exporter as it was before the lock (a buffered append handle, one
  ``write`` and a ``flush`` per batch);
* ``unlocked``: today's ``JsonlExporter`` with its lock taken out (one ``os.write`` per
  batch after an ``fstat``: the end is checked for a torn line);
* ``locked``: today's ``JsonlExporter`` (``flock`` before, ``flock(LOCK_UN)`` after).

Nobody else holds the lock, as when one process writes the file (the common case) or when
several do and do not collide. CPU is the writer thread's (``time.thread_time``), per batch:
min and median over ``rounds`` rounds, the variants interleaved within each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from garrison.audit.jsonl_export import JsonlExporter
from garrison.private_files import open_private_append

# Records per batch: a busy gateway commits a few dozen events per write transaction.
BATCH_RECORDS = 32
# Bytes per record: the order of one call's audit record.
RECORD_BYTES = 600
# Exports timed per variant and round (about 20 MB of file per variant and round).
BATCHES = 1000
# Rounds; min and median are over them.
ROUNDS = 15


class _Before:
    """The exporter before the lock (``git show fd99793:src/garrison/audit/exporters.py``)."""

    def __init__(self, path: Path) -> None:
        self._handle = open_private_append(path)

    def export(self, records: Sequence[bytes]) -> None:
        self._handle.write(b"".join(r + b"\n" for r in records))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class _Unlocked(JsonlExporter):
    def _lock(self, wait_s: float) -> None:
        return

    def _unlock(self) -> None:
        return


_VARIANTS: dict[str, Callable[[Path], _Before | JsonlExporter]] = {
    "before": _Before,
    "unlocked": _Unlocked,
    "locked": JsonlExporter,
}


def _batch(first: int) -> list[bytes]:
    pad = "x" * (RECORD_BYTES - 40)
    return [
        json.dumps({"v": 2, "i": first + k, "pad": pad}, separators=(",", ":")).encode()
        for k in range(BATCH_RECORDS)
    ]


def _round(make: Callable[[Path], _Before | JsonlExporter], path: Path, batches: int) -> float:
    """CPU µs per export over ``batches`` exports to a fresh file."""
    path.unlink(missing_ok=True)
    exporter = make(path)
    records = _batch(0)
    exporter.export(records)  # opened, the first write's extra checks paid
    started = time.thread_time()
    for _ in range(batches):
        exporter.export(records)
    spent = time.thread_time() - started
    exporter.close()
    path.unlink()
    return spent / batches * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=BATCHES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "export-bench.jsonl"
        spent: dict[str, list[float]] = {name: [] for name in _VARIANTS}
        for _ in range(args.rounds):
            for name, make in _VARIANTS.items():
                spent[name].append(_round(make, path, args.batches))
    print(
        f"{BATCH_RECORDS} records of {RECORD_BYTES} B per batch, {args.batches} batches x "
        f"{args.rounds} rounds, pid {os.getpid()}; CPU µs per batch (writer thread)"
    )
    for name, values in spent.items():
        print(f"  {name:9s} min {min(values):7.2f}  median {statistics.median(values):7.2f}")


if __name__ == "__main__":
    main()
