"""Streaming committed records to a SIEM: JSON-lines file and syslog over UDP."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import orjson
import pytest

from garrison.audit import AuditEvent, EventName, tree_sink
from garrison.audit.exporters import JsonlExporter, SyslogExporter, parse_syslog_address
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.writer import AuditLog
from garrison.store import make_engine, migrate


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


async def test_jsonl_file_gets_every_committed_record_with_its_index(tmp_path: Path) -> None:
    out = tmp_path / "siem" / "audit.jsonl"
    log = AuditLog(SqliteAuditSink(_db(tmp_path), exporters=[JsonlExporter(out)]))
    log.start()
    try:
        for i in range(5):
            await log.append(AuditEvent(EventName.REQUEST_ALLOWED, at=1.0 + i, request_id=f"r{i}"))
    finally:
        log.close()
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(r["i"], r["request_id"]) for r in lines] == [(i, f"r{i}") for i in range(5)]


async def test_syslog_receives_rfc5424_messages(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    port = receiver.getsockname()[1]
    log = AuditLog(SqliteAuditSink(_db(tmp_path), exporters=[SyslogExporter("127.0.0.1", port)]))
    log.start()
    try:
        await log.append(AuditEvent(EventName.REQUEST_DENIED, at=1.0, request_id="x1"))
        message = receiver.recv(65536)
    finally:
        log.close()
        receiver.close()
    assert message.startswith(b"<134>1 ")
    assert b" garrison - audit - " in message
    assert orjson.loads(message.split(b" - audit - ", 1)[1])["request_id"] == "x1"


def test_syslog_timestamp_comes_from_the_injected_clock() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    exporter = SyslogExporter("127.0.0.1", receiver.getsockname()[1], clock=lambda: 86400.0)
    try:
        exporter.export([b'{"i":0}'])
        message = receiver.recv(65536)
    finally:
        exporter.close()
        receiver.close()
    assert message.startswith(b"<134>1 1970-01-02T00:00:00Z ")


class _Broken:
    def export(self, records: object) -> None:
        raise OSError("siem down")

    def close(self) -> None:
        pass


async def test_a_failing_exporter_does_not_fail_the_append(tmp_path: Path) -> None:
    log = AuditLog(SqliteAuditSink(_db(tmp_path), exporters=[_Broken()]))
    log.start()
    try:
        await log.append(AuditEvent(EventName.REQUEST_ALLOWED, at=1.0))
        assert log.healthy
    finally:
        log.close()


def test_syslog_address_must_be_host_and_port() -> None:
    assert parse_syslog_address("127.0.0.1:514") == ("127.0.0.1", 514)
    assert parse_syslog_address("[::1]:514") == ("::1", 514)
    for bad in ("localhost", ":514", "host:port"):
        try:
            parse_syslog_address(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def _write(db: Path, names: list[str], exporters: list[JsonlExporter] | None = None) -> None:
    """One process's commits: through its own sink (with ``exporters``, handed on as usual;
    without, committed and never handed on, as a process killed in between leaves them)."""
    sink = SqliteAuditSink(db, exporters=exporters or [])
    sink.open()
    try:
        sink.write_batch(
            [AuditEvent(EventName.REQUEST_ALLOWED, at=1.0, request_id=n) for n in names]
        )
    finally:
        sink.close(final=False)


def _exported(out: Path) -> list[tuple[int, str]]:
    return [(r["i"], r["request_id"]) for r in map(orjson.loads, out.read_bytes().splitlines())]


def test_a_file_behind_the_log_catches_up_at_start_in_leaf_order(tmp_path: Path) -> None:
    db, out = _db(tmp_path), tmp_path / "audit.jsonl"
    _write(db, ["a0", "a1", "a2"], [JsonlExporter(out)])
    _write(db, ["b3", "b4"])  # committed, never exported: the process died before its hand-on
    assert _exported(out) == [(0, "a0"), (1, "a1"), (2, "a2")]
    _write(db, ["c5"], [JsonlExporter(out)])  # the next start: catch-up, then its own batch
    assert _exported(out) == [(0, "a0"), (1, "a1"), (2, "a2"), (3, "b3"), (4, "b4"), (5, "c5")]


def test_a_torn_last_line_is_cut_and_its_record_written_again_whole(tmp_path: Path) -> None:
    db, out = _db(tmp_path), tmp_path / "audit.jsonl"
    _write(db, ["a0", "a1"], [JsonlExporter(out)])
    whole = out.read_bytes()
    _write(db, ["b2"])
    with open(out, "ab") as handle:  # the process died mid-write of record 2
        handle.write(b'{"v":2,"i":2,"name":"requ')
    _write(db, [], [JsonlExporter(out)])
    assert out.read_bytes().startswith(whole)
    assert _exported(out) == [(0, "a0"), (1, "a1"), (2, "b2")]


def test_a_new_or_empty_file_starts_from_now_not_from_the_log_s_history(tmp_path: Path) -> None:
    db = _db(tmp_path)
    _write(db, ["a0", "a1"])
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    for out in (tmp_path / "new.jsonl", empty):
        _write(db, [f"n-{out.stem}"], [JsonlExporter(out)])
        assert [name for _, name in _exported(out)] == [f"n-{out.stem}"]


def test_a_gap_past_the_catch_up_limit_is_named_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tree_sink, "EXPORT_CATCH_UP_MAX", 2)
    db, out = _db(tmp_path), tmp_path / "audit.jsonl"
    _write(db, ["a0"], [JsonlExporter(out)])
    _write(db, ["b1", "b2", "b3"])
    with caplog.at_level(logging.WARNING, logger="garrison.audit"):
        _write(db, ["c4"], [JsonlExporter(out)])
    assert _exported(out) == [(0, "a0"), (4, "c4")]
    assert "3 records behind" in caplog.text and "garrison audit export" in caplog.text


def test_the_catch_up_reads_the_last_index_past_a_line_that_is_not_a_record(
    tmp_path: Path,
) -> None:
    db, out = _db(tmp_path), tmp_path / "audit.jsonl"
    _write(db, ["a0"], [JsonlExporter(out)])
    with open(out, "ab") as handle:  # something else appended a line to the file
        handle.write(b"not json\n")
    _write(db, ["b1"])
    _write(db, [], [JsonlExporter(out)])
    lines = out.read_bytes().splitlines()
    assert lines[1] == b"not json"
    assert [orjson.loads(line)["i"] for line in (lines[0], *lines[2:])] == [0, 1]
