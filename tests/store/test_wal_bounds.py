"""The write-ahead log is bounded: it gives its space back after a peak, and the audit sink's
recovery probe cuts it to nothing (a small file system is not filled by the WAL alone).

SQLite only: the write-ahead log and its pragmas are SQLite's (PostgreSQL manages its own).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.store.db import (
    SQLITE_JOURNAL_SIZE_LIMIT_BYTES,
    SQLITE_WAL_AUTOCHECKPOINT_PAGES,
    apply_sqlite_pragmas,
    truncate_wal,
)

ROW = b"x" * 4000  # about one page per row


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    apply_sqlite_pragmas(conn)
    return conn


def _grow_past_the_limit(path: Path) -> sqlite3.Connection:
    """Commit ~3x the limit while a reader holds an old snapshot (no checkpoint can reset
    the WAL meanwhile, as in an outage or a long export). Returns the writer."""
    writer = _connect(path)
    writer.execute("CREATE TABLE t (b BLOB)")
    reader = _connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    per_commit = 100  # commits of ~100 pages (an fsync each: keep the test quick)
    for _ in range(3 * SQLITE_JOURNAL_SIZE_LIMIT_BYTES // len(ROW) // per_commit + 1):
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO t VALUES (?)", [(ROW,)] * per_commit)
        writer.execute("COMMIT")
    assert _wal(path) > 2 * SQLITE_JOURNAL_SIZE_LIMIT_BYTES  # the peak
    reader.execute("COMMIT")
    reader.close()
    return writer


def test_every_connection_gets_the_wal_bounds(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "g.db")
    assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == (
        SQLITE_JOURNAL_SIZE_LIMIT_BYTES
    )
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (
        SQLITE_WAL_AUTOCHECKPOINT_PAGES
    )


def test_the_wal_is_cut_back_to_the_limit_after_a_peak(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = _grow_past_the_limit(path)
    # Ordinary commits after the peak: the autocheckpoint backfills, the next write resets
    # the WAL and cuts the file back to the limit.
    for _ in range(3):
        writer.execute("INSERT INTO t VALUES (?)", (ROW,))
    assert _wal(path) <= SQLITE_JOURNAL_SIZE_LIMIT_BYTES
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] > 0


def test_truncate_wal_leaves_an_empty_wal_and_every_row(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = _grow_past_the_limit(path)
    rows = writer.execute("SELECT count(*) FROM t").fetchone()[0]
    truncate_wal(writer)
    assert _wal(path) == 0
    assert _connect(path).execute("SELECT count(*) FROM t").fetchone()[0] == rows


def test_truncate_wal_says_so_when_a_reader_blocks_it(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = _connect(path)
    writer.execute("PRAGMA busy_timeout=0")
    writer.execute("CREATE TABLE t (b BLOB)")
    reader = _connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    writer.execute("INSERT INTO t VALUES (?)", (ROW,))
    try:
        truncate_wal(writer)
    except sqlite3.OperationalError as exc:
        assert "blocked" in str(exc) or "locked" in str(exc) or "busy" in str(exc)
    else:
        raise AssertionError("a WAL a reader still needs was reported truncated")
    finally:
        reader.execute("COMMIT")


def test_the_audit_probe_gives_the_wal_space_back(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = _grow_past_the_limit(path)
    assert _wal(path) > SQLITE_JOURNAL_SIZE_LIMIT_BYTES
    sink = SqliteAuditSink(path)
    try:
        sink.probe()  # what the writer runs while the log is down
        assert _wal(path) == 0
    finally:
        sink.close()
    writer.close()
