"""Streaming committed audit records to a SIEM: a JSON-lines file and/or syslog over UDP.

Exporters run in the writer thread after each commit, with *every* record it committed —
the process's own events and the directory changes it integrated from the audit outbox
(admin changes, locks, alerts, incidents, keys) — exactly as stored (leaf index included), in
leaf order. Each record is exported once, by the process that integrated it
(``garrison.audit.outbox``). A failing exporter is logged and skipped: the durable log, not
the copy, is the record.

The writer acknowledges a batch once it is durable and hands it on after, so a process
killed in between has committed records its exporters never saw. The JSON-lines file
catches up when the log is opened again (``JsonlExporter.resume_after``,
``append_missing``): it appends every record after the last leaf index its file holds and
not already in it, so a crash leaves no gap in the file. Processes sharing one file take its
lock for each write (``garrison.audit.jsonl_export``); the one duplicate left is a record
another live process committed but had not yet handed on when the catch-up read the log
(records carry their leaf index ``i``: deduplicate on it). Syslog cannot be read back; its
gap is the durable log's to fill (``garrison audit export``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from garrison.audit.jsonl_export import JsonlExporter

__all__ = ["EXPORT_CATCH_UP_CHUNK", "EXPORT_CATCH_UP_MAX", "Exporter", "JsonlExporter"]

log = logging.getLogger("garrison.audit")

# Syslog facility local0, severity informational: <PRI> = 16 * 8 + 6.
SYSLOG_PRI = 134
# Largest UDP syslog message sent; RFC 5426 asks receivers to accept at least 2,048 bytes,
# most accept 64 KiB. Longer records are cut (the full record stays in the log).
SYSLOG_MAX_BYTES = 8192
# Most records one start appends to catch a JSON-lines file up. A crash leaves at most one
# batch unexported; more means the file was behind for another reason (an exporter that
# failed for a long time, a file restored from an old copy, a process that shares the log
# and was down while others wrote): past this the gap is logged with the command that fills
# it (``garrison audit export``), not replayed into the file at start.
EXPORT_CATCH_UP_MAX = 100_000
# Records read from the log and appended per step of a catch-up (a few MiB in memory).
EXPORT_CATCH_UP_CHUNK = 4_096


class Exporter(Protocol):
    def export(self, records: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...


class SyslogExporter:
    """RFC 5424 messages over UDP (``APP-NAME`` garrison, ``MSGID`` audit)."""

    def __init__(self, host: str, port: int, *, clock: Callable[[], float] = time.time) -> None:
        self._address = (host, port)
        self._clock = clock  # the message's TIMESTAMP
        self._sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self._hostname = socket.gethostname()

    def export(self, records: Sequence[bytes]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        header = f"<{SYSLOG_PRI}>1 {stamp} {self._hostname} garrison - audit - ".encode()
        for record in records:
            self._sock.sendto((header + record)[:SYSLOG_MAX_BYTES], self._address)

    def close(self) -> None:
        self._sock.close()


def build_exporters(jsonl: Path | None, syslog: str | None) -> list[Exporter]:
    """The exporters a config names (``[audit] jsonl_path``, ``[audit] syslog``);
    ``ValueError`` for a bad syslog address."""
    out: list[Exporter] = []
    if jsonl is not None:
        out.append(JsonlExporter(jsonl))
    if syslog:
        out.append(SyslogExporter(*parse_syslog_address(syslog)))
    return out


def parse_syslog_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"syslog address {text!r} must be HOST:PORT")
    return host.strip("[]"), int(port)
