"""Streaming committed records to a SIEM: JSON-lines file and syslog over UDP."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson

from garrison.audit import AuditEvent, EventName
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
