"""One JSON-lines export file shared by several processes: its lock (``jsonl_export``)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from garrison.audit import AuditEvent, EventName, jsonl_export
from garrison.audit.jsonl_export import EXPORT_LOCK_WAIT_S, JsonlExporter
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.store import make_engine, migrate

# How long a child process holds the lock mid-write: well past a start's catch-up, well
# below EXPORT_LOCK_WAIT_S, so the other process waits rather than gives up.
HOLD_S = 0.8
# Longest wait for a child's signal (a loaded machine starts Python slowly).
CHILD_READY_S = 60.0

# A process that commits ``names`` and exports them as one batch written in pieces, with
# HOLD_S between them (a large batch in several write(2) calls, or one not finished yet);
# it says so in ``ready`` after the first piece. It commits once ``go`` exists ("-": at
# once), and says it waits in ``ready``.open. argv: db, out, ready, go, hold_s, pieces,
# then the names.
_SLOW_WRITER = """
import sys, time
from pathlib import Path
from garrison.audit import AuditEvent, EventName, jsonl_export
from garrison.audit.sqlite_sink import SqliteAuditSink

db, out, ready, go, hold, pieces, *names = sys.argv[1:]
real = jsonl_export._write_all

def slow(fd, data):
    step = len(data) // int(pieces) + 1
    for k in range(0, len(data), step):
        real(fd, data[k : k + step])
        Path(ready).touch()
        time.sleep(float(hold))

jsonl_export._write_all = slow
sink = SqliteAuditSink(Path(db), exporters=[jsonl_export.JsonlExporter(Path(out))])
sink.open()
Path(ready + ".open").touch()
while go != "-" and not Path(go).exists():
    time.sleep(0.001)
sink.write_batch([AuditEvent(EventName.REQUEST_ALLOWED, at=1.0, request_id=n) for n in names])
sink.close(final=False)
"""

# A process that takes the file's lock, says so in ``ready`` and keeps it until killed.
_HOLDER = """
import fcntl, os, sys, time
from pathlib import Path
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
Path(sys.argv[2]).touch()
time.sleep(600)
"""

# A process that writes half a batch under the lock and dies (SIGKILL-like: no cleanup).
_DIES_MID_WRITE = """
import os, sys
from pathlib import Path
from garrison.audit import jsonl_export

real = jsonl_export._write_all

def half(fd, data):
    real(fd, data[: len(data) // 2 + 7])  # mid-line
    os._exit(9)

jsonl_export._write_all = half
batch = [b'{"i":%d,"pad":"%s"}' % (i, b"x" * 300) for i in range(50, 60)]
jsonl_export.JsonlExporter(Path(sys.argv[1])).export(batch)
"""


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


def _write(db: Path, names: list[str], exporters: list[JsonlExporter] | None = None) -> None:
    sink = SqliteAuditSink(db, exporters=exporters or [])
    sink.open()
    try:
        sink.write_batch(
            [AuditEvent(EventName.REQUEST_ALLOWED, at=1.0, request_id=n) for n in names]
        )
    finally:
        sink.close(final=False)


def _child(script: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)])


def _wait_for(path: Path, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + CHILD_READY_S
    while not path.exists():
        assert child.poll() is None, f"the child ended ({child.returncode}) before its signal"
        assert time.monotonic() < deadline, "the child never signalled"
        time.sleep(0.01)


def _lines(out: Path) -> list[dict[str, object]]:
    """Every line of the file, each one whole JSON (a torn or interleaved line fails)."""
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    return [orjson.loads(line) for line in raw.splitlines()]


def test_a_start_waits_for_another_process_s_batch_instead_of_cutting_it(
    tmp_path: Path,
) -> None:
    db, out, ready = _db(tmp_path), tmp_path / "audit.jsonl", tmp_path / "ready"
    _write(db, ["a0"], [JsonlExporter(out)])
    names = [f"b{i}-{'x' * 200}" for i in range(1, 201)]  # ~60 KiB, written in 4 pieces
    writer = _child(_SLOW_WRITER, db, out, ready, "-", HOLD_S / 4, 4, *names)
    try:
        _wait_for(ready, writer)  # its batch is committed and a quarter written
        _write(db, ["c201"], [JsonlExporter(out)])  # this start's cut, catch-up and batch
    finally:
        assert writer.wait(timeout=CHILD_READY_S) == 0
    lines = _lines(out)
    assert [r["i"] for r in lines] == list(range(202))
    assert [r["request_id"] for r in lines] == ["a0", *names, "c201"]


def test_two_processes_batches_never_interleave_inside_a_line(tmp_path: Path) -> None:
    out, go = tmp_path / "audit.jsonl", tmp_path / "go"
    children, names = [], {}
    for who in ("p", "q"):  # each on a log of its own: only the file is shared
        names[who] = [f"{who}{i}-{'y' * 300}" for i in range(100)]
        (tmp_path / who).mkdir()
        db, ready = _db(tmp_path / who), tmp_path / f"{who}.ready"
        children.append(_child(_SLOW_WRITER, db, out, ready, go, 0.02, 8, *names[who]))
    try:
        for who, child in zip(("p", "q"), children, strict=True):
            _wait_for(tmp_path / f"{who}.ready.open", child)
        go.touch()  # both commit and write their batches, in 8 pieces each, at once
    finally:
        for child in children:
            assert child.wait(timeout=CHILD_READY_S) == 0
    written = [str(r["request_id"]) for r in _lines(out)]
    assert written in (names["p"] + names["q"], names["q"] + names["p"])


def test_a_batch_torn_by_a_holder_that_died_is_cut_before_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "audit.jsonl"
    exporter = JsonlExporter(out)
    exporter.export([b'{"i":0}'])
    assert _child(_DIES_MID_WRITE, out).wait(timeout=CHILD_READY_S) == 9
    assert not out.read_bytes().endswith(b"\n")  # its half batch, the last line torn
    with caplog.at_level(logging.WARNING, logger="garrison.audit"):
        exporter.export([b'{"i":60}'])
    exporter.close()
    indices = [r["i"] for r in _lines(out)]
    assert indices[0] == 0 and indices[-1] == 60
    assert indices[1:-1] == list(range(50, 50 + len(indices) - 2))  # the whole lines kept
    assert "cutting a torn last line" in caplog.text


def test_a_lock_held_past_the_wait_costs_the_copy_not_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jsonl_export, "EXPORT_LOCK_WAIT_S", 0.2)
    monkeypatch.setattr(jsonl_export, "EXPORT_LOCK_WAIT_BEHIND_S", 0.02)
    db, out, ready = _db(tmp_path), tmp_path / "audit.jsonl", tmp_path / "ready"
    _write(db, ["a0"], [JsonlExporter(out)])
    _write(db, ["b1"])  # committed, never exported: the next start would catch it up
    holder = _child(_HOLDER, out, ready)
    try:
        _wait_for(ready, holder)
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="garrison.audit"):
            _write(db, ["c2"], [JsonlExporter(out)])  # its catch-up and its batch both wait
            exporter = JsonlExporter(out)
            exporter.export([b'{"i":3}'])
            behind = time.monotonic()
            exporter.export([b'{"i":4}'])  # a gap open: the short wait
            behind = time.monotonic() - behind
        assert time.monotonic() - started < 3 * 0.2 + 3  # the waits, then the commits' time
        assert jsonl_export.EXPORT_LOCK_WAIT_BEHIND_S <= behind < 0.2
        assert "catch-up skipped" in caplog.text
        assert "records from index 2 are not written" in caplog.text
        assert "records from index 3 are not written" in caplog.text
        assert "garrison audit export" in caplog.text
    finally:
        holder.kill()
        holder.wait()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="garrison.audit"):
        exporter.export([b'{"i":5}'])  # the lock is free again: written; the gap named
    exporter.close()
    assert [r["i"] for r in _lines(out)] == [0, 5]
    assert "2 records, index 3 to 4, are not in the file" in caplog.text
    assert "garrison audit export" in caplog.text


def test_the_default_waits_are_bounded_and_the_wait_behind_is_the_shorter() -> None:
    assert 0.5 <= EXPORT_LOCK_WAIT_S <= 10
    assert jsonl_export.EXPORT_LOCK_WAIT_BEHIND_S < EXPORT_LOCK_WAIT_S


def test_the_catch_up_skips_records_another_process_exported_out_of_order(
    tmp_path: Path,
) -> None:
    db, out = _db(tmp_path), tmp_path / "audit.jsonl"
    late, early = tmp_path / "late.jsonl", tmp_path / "early.jsonl"
    _write(db, ["a0", "a1"], [JsonlExporter(out)])
    _write(db, ["b2"], [JsonlExporter(late)])
    _write(db, ["c3"], [JsonlExporter(early)])
    with open(out, "ab") as handle:  # two processes handed on in the other order
        handle.write(early.read_bytes() + late.read_bytes())
    _write(db, ["d4"], [JsonlExporter(out)])  # resumes after 2; 3 is there already
    assert [r["i"] for r in _lines(out)] == [0, 1, 3, 2, 4]


def test_a_catch_up_chunk_skips_what_another_writer_appended_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    catching_up, other = JsonlExporter(out), JsonlExporter(out)  # two descriptions, two locks
    other.export([b'{"i":0}'])
    assert catching_up.resume_after() == 0
    other.export([b'{"i":2}'])  # another process's live batch, after the resume point
    written = catching_up.append_missing([(i, b'{"i":%d}' % i) for i in (1, 2, 3)])
    catching_up.close()
    other.close()
    assert written == 2
    assert [r["i"] for r in _lines(out)] == [0, 2, 1, 3]
