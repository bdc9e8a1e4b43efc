"""The audit sink's memory is bounded whatever batch sizes reach it: rows are inserted in
power-of-two chunks, so only ten INSERT shapes are ever prepared (one shape per batch size
seen kept ~110 MB of prepared statements after an outage's backlog), and the connection's
statement cache is bounded (``AUDIT_CACHED_STATEMENTS``)."""

from __future__ import annotations

import gc
import os
import sqlite3
from pathlib import Path

from garrison.audit import AuditEvent, EventName, SqliteAuditSink
from garrison.audit.insert_chunks import ROWS_PER_INSERT, chunk_sizes
from garrison.audit.sqlite_sink import AUDIT_CACHED_STATEMENTS
from garrison.store import make_engine, migrate

# SQLite's limit on bound parameters in one statement.
SQLITE_MAX_VARIABLES = 32_766


def test_every_batch_size_uses_one_of_ten_chunk_sizes() -> None:
    shapes: set[int] = set()
    for total in range(0, 2 * ROWS_PER_INSERT + 70):
        sizes = list(chunk_sizes(total))
        assert sum(sizes) == total
        assert sizes == sorted(sizes, reverse=True)
        assert all(size & (size - 1) == 0 and size <= ROWS_PER_INSERT for size in sizes)
        shapes.update(sizes)
    assert len(shapes) == ROWS_PER_INSERT.bit_length() == 10
    assert 9 * ROWS_PER_INSERT <= SQLITE_MAX_VARIABLES
    assert len(shapes) + 4 <= AUDIT_CACHED_STATEMENTS  # room for the sink's other statements


def _rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_batches_of_many_sizes_do_not_grow_memory(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    sink = SqliteAuditSink(path)
    sink.open()
    try:
        sink.write_batch([AuditEvent(EventName.REQUEST_DENIED, at=1.0, request_id="warm")])
        gc.collect()
        before = _rss_mb()
        written = 1
        for b in range(128):  # distinct sizes 500..999, as a drained backlog gives
            size = 500 + (b * 499) // 127
            sink.write_batch(
                [
                    AuditEvent(EventName.REQUEST_DENIED, at=2.0, request_id=f"r{written + k}")
                    for k in range(size)
                ]
            )
            written += size
        gc.collect()
        grown = _rss_mb() - before
    finally:
        sink.close()
    # One prepared statement per size held ~110 MB here; ten shapes hold under 1 MB.
    assert grown < 25, f"RSS grew {grown:.1f} MB"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), max(seq) FROM audit_events").fetchone() == (
        written,
        written,
    )
