"""Locks placed while the database cannot be written: the one exception to "a change and its
audit record commit together".

A lock is the containment an operator reaches for during an incident — possibly the very
incident that broke the audit log (a full disk, a wedged database). So when the normal write
fails, the lock goes into this journal instead: a file preallocated at start (writing into
blocks already allocated works on a full disk), one fixed-size slot per lock, fsynced. The
gateway enforces it at once from memory, and folds it into the database and the audit log
(``lock.created`` with ``emergency: true``) as soon as they can be written again; only then
is the slot cleared.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import orjson

JOURNAL_FILE = "emergency-locks.journal"
# Locks that can be placed during one outage: one per key, person and vendor of a large
# incident fits; past it a lock is refused (503) rather than lost.
EMERGENCY_SLOTS = 256
# One lock record (reason at most 500 characters, names at most 200) fits with room.
EMERGENCY_SLOT_BYTES = 2048


class JournalFull(Exception):
    pass


class EmergencyJournal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def preallocate(self) -> None:
        """Create the journal at its full size (0600) unless it is there already."""
        size = EMERGENCY_SLOTS * EMERGENCY_SLOT_BYTES
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError:  # a file system without fallocate: write the zeros
                    os.pwrite(fd, b"\0" * size, 0)
                os.fsync(fd)
        finally:
            os.close(fd)

    def _slots(self) -> list[bytes]:
        data = self.path.read_bytes() if self.path.exists() else b""
        return [
            data[i : i + EMERGENCY_SLOT_BYTES] for i in range(0, len(data), EMERGENCY_SLOT_BYTES)
        ]

    def place(self, record: dict[str, Any]) -> int:
        """Write ``record`` durably into a free slot; its slot number.

        Finding a free slot and filling it hold an exclusive lock on the journal: two
        requests (or two processes on one data directory) placing at once would otherwise
        both take the same free slot, and the first lock would be overwritten and lost."""
        data = orjson.dumps(record)
        if len(data) >= EMERGENCY_SLOT_BYTES:
            raise ValueError("emergency lock record too large")
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for slot in range(EMERGENCY_SLOTS):
                raw = os.pread(fd, 1, slot * EMERGENCY_SLOT_BYTES)
                if raw[:1] == b"\0" or not raw:
                    os.pwrite(
                        fd, data.ljust(EMERGENCY_SLOT_BYTES, b"\0"), slot * EMERGENCY_SLOT_BYTES
                    )
                    os.fsync(fd)
                    return slot
        finally:
            os.close(fd)  # releases the lock
        raise JournalFull(f"all {EMERGENCY_SLOTS} emergency lock slots are in use")

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        """Locks placed and not yet folded into the database, with their slots."""
        out: list[tuple[int, dict[str, Any]]] = []
        for slot, raw in enumerate(self._slots()):
            if raw[:1] in (b"\0", b""):
                continue
            try:
                record = orjson.loads(raw.rstrip(b"\0"))
            except orjson.JSONDecodeError:
                continue  # a slot torn by a crash mid-write: its lock was never acknowledged
            if isinstance(record, dict):
                out.append((slot, record))
        return out

    def clear(self, slot: int) -> None:
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.pwrite(fd, b"\0" * EMERGENCY_SLOT_BYTES, slot * EMERGENCY_SLOT_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
