"""Streaming committed audit records to a SIEM: a JSON-lines file and/or syslog over UDP.

Exporters run in the writer thread after each commit, with *every* record it committed —
the process's own events and the directory changes it integrated from the audit outbox
(admin changes, locks, alerts, incidents, keys) — exactly as stored (leaf index included), in
leaf order. Each record is exported once, by the process that integrated it
(``garrison.audit.outbox``). A failing exporter is logged and skipped: the durable log, not
the copy, is the record.

The writer acknowledges a batch once it is durable and hands it on after, so a process
killed in between has committed records its exporters never saw. The JSON-lines file
catches up when the log is opened again (``JsonlExporter.resume_after``): it appends every
record after the highest leaf index its file holds, so a crash leaves no gap in the file —
at the price of a possible duplicate when another process shares the log and the file
(records carry their leaf index ``i``: deduplicate on it). Syslog cannot be read back; its
gap is the durable log's to fill (``garrison audit export``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import orjson

from garrison.private_files import open_private_append

log = logging.getLogger("garrison.audit")

# Syslog facility local0, severity informational: <PRI> = 16 * 8 + 6.
SYSLOG_PRI = 134
# Largest UDP syslog message sent; RFC 5426 asks receivers to accept at least 2,048 bytes,
# most accept 64 KiB. Longer records are cut (the full record stays in the log).
SYSLOG_MAX_BYTES = 8192
# How much of a JSON-lines file's end is read at start for its last leaf index: one record
# is at most a few KiB (a call's record; a directory change's summary is capped), so the
# last whole line is always in it; a file whose end holds no index is not caught up.
EXPORT_TAIL_READ_BYTES = 1 << 20
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


class JsonlExporter:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._resume = _cut_torn_line(path)
        # Kept open for the process lifetime; 0600 like every state file.
        self._handle = open_private_append(path)

    def resume_after(self) -> int | None:
        """The leaf index of the file's last whole record (None: the file is new, empty,
        or its end holds no index): the log's records after it are appended at start."""
        return self._resume

    def export(self, records: Sequence[bytes]) -> None:
        self._handle.write(b"".join(r + b"\n" for r in records))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _cut_torn_line(path: Path) -> int | None:
    """Cut a torn last line off ``path`` (a process killed mid-write leaves part of a
    record after the last newline: that part is written again whole by the catch-up), and
    return the leaf index of the last whole record, if its end holds one."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as handle:
        start = max(0, size - EXPORT_TAIL_READ_BYTES)
        handle.seek(start)
        tail = handle.read()
    whole = tail.rfind(b"\n") + 1
    if whole < len(tail):
        if whole == 0 and start > 0:
            return None  # no line end in the tail: not a file of records; leave it be
        log.warning("audit export %s: cutting a torn last line (%d bytes)", path, len(tail) - whole)
        os.truncate(path, start + whole)
    for line in reversed(tail[:whole].splitlines()):
        try:
            index = orjson.loads(line).get("i")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
            return index
    return None


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
