"""The JSON-lines export file: one line per committed record, shared safely between processes.

Several processes (gateways on one database, a host command integrating the outbox) may
append to one file. Each holds an exclusive advisory lock (``flock`` on its own descriptor
of the file) while it touches the file, so:

* a batch is written whole, in one unit under the lock: two processes' lines never
  interleave, and no process sees another's batch half written;
* a line without its newline at the end of the file can only be a holder's that died
  mid-write (the lock ends with the process): it is cut before the next write, by whoever
  writes next, and its record is written again whole by the next start's catch-up;
* the start's catch-up reads the file's last leaf index under the lock, and each of its
  chunks first reads what other processes appended since, under the same lock, and skips
  the records already there.

The lock is waited for at most ``EXPORT_LOCK_WAIT_S``: the file is a copy and the log the
record, so a holder that never lets go (a process stopped mid-write, a hung mount) costs
the copy, logged with its range and the command that fills it, not the writer thread.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from garrison.private_files import PRIVATE_FILE_MODE, narrow

log = logging.getLogger("garrison.audit")

# How much of the file's end is read for its last leaf index (at start) or for what other
# processes appended (during a catch-up): one record is at most a few KiB (a call's record;
# a directory change's summary is capped), so the last whole line is always in it; a file
# whose end holds no index is not caught up.
EXPORT_TAIL_READ_BYTES = 1 << 20
# Longest wait for the file's lock. A holder holds it for one batch (microseconds to a few
# milliseconds) or one catch-up chunk (``EXPORT_CATCH_UP_CHUNK`` records, tens of
# milliseconds); a wait of seconds means a stuck holder (a process stopped mid-write, a hung
# network mount). The writer thread must not stop behind it: past this the batch is left
# out of the file, and the gap is logged with the command that writes it.
EXPORT_LOCK_WAIT_S = 2.0
# The wait while such a gap is open: a holder that stays stuck then costs the writer thread
# this much per batch, not ``EXPORT_LOCK_WAIT_S``; the gap closes at the first write.
EXPORT_LOCK_WAIT_BEHIND_S = 0.05
# First and longest sleep between tries of a lock held elsewhere (flock has no timeout).
EXPORT_LOCK_POLL_S = 0.0002
EXPORT_LOCK_POLL_MAX_S = 0.01


class ExportLockTimeout(OSError):
    """The file's lock was not taken in time (another process holds it)."""


class JsonlExporter:
    """Appends each batch to ``path`` whole under the file's lock (one exporter per thread:
    the audit writer's)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Kept open for the process lifetime; 0600 like every state file. Read too: the
        # file's end is read under the lock.
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        narrow(self._fd)
        self._end = -1  # the file's size when this exporter last wrote or read its end
        self._present: set[int] | None = None  # during a catch-up: indices already there
        self._gap: tuple[int | None, int | None, int] | None = None  # first, last, count

    def resume_after(self) -> int | None:
        """The leaf index of the file's last whole record (None: the file is new, empty,
        or its end holds no index), read under the lock after cutting a torn last line:
        the log's records after it are appended at start (``append_missing``).
        ``ExportLockTimeout`` if the lock is not taken in time."""
        self._lock(EXPORT_LOCK_WAIT_S)
        try:
            size = os.fstat(self._fd).st_size
            start = max(0, size - EXPORT_TAIL_READ_BYTES)
            tail = os.pread(self._fd, size - start, start)
            whole = tail.rfind(b"\n") + 1
            if whole < len(tail):
                if whole == 0 and start > 0:
                    self._end = size
                    return None  # no line end in the tail: not a file of records; leave it be
                size = self._cut(start + whole, len(tail) - whole)
            self._end = size
            indices = list(_indices(tail[:whole].splitlines()))
            self._present = set(indices)
            return indices[-1] if indices else None
        finally:
            self._unlock()

    def append_missing(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Append the catch-up's ``(leaf index, record)`` pairs not already in the file:
        under the lock, what other processes appended since this exporter last looked is
        read first and its records are skipped. Returns how many were written."""
        present = self._present if self._present is not None else set()
        self._lock(EXPORT_LOCK_WAIT_S)
        try:
            size = self._take_others(present)
            fresh = [(i, r) for i, r in records if i not in present]
            data = b"".join(r + b"\n" for _, r in fresh)
            _write_all(self._fd, data)
            self._end = size + len(data)
            present.update(i for i, _ in fresh)
            self._present = present
            return len(fresh)
        finally:
            self._unlock()

    def export(self, records: Sequence[bytes]) -> None:
        """Append ``records`` as one write under the lock; past the wait they are left out
        of the file and the gap logged (never raised: the log holds them)."""
        self._present = None  # the catch-up is over
        if not records:
            return
        data = b"".join(r + b"\n" for r in records)
        try:
            self._lock(EXPORT_LOCK_WAIT_BEHIND_S if self._gap else EXPORT_LOCK_WAIT_S)
        except ExportLockTimeout:
            self._left_out(records)
            return
        try:
            size = os.lseek(self._fd, 0, os.SEEK_END)  # cheaper than fstat, same answer
            if size != self._end:  # another process wrote, or one died mid-write
                size = self._cut_torn_end(size)
            _write_all(self._fd, data)
            self._end = size + len(data)
        finally:
            self._unlock()
        if self._gap is not None:
            self._gap_closed()

    def close(self) -> None:
        os.close(self._fd)

    # -- the lock ------------------------------------------------------------------------
    def _lock(self, wait_s: float) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        deadline = time.monotonic() + wait_s
        pause = EXPORT_LOCK_POLL_S
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ExportLockTimeout(f"{self._path}: lock held elsewhere for {wait_s:g} s")
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, EXPORT_LOCK_POLL_MAX_S)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                continue

    def _unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- under the lock ------------------------------------------------------------------
    def _cut(self, keep: int, torn: int) -> int:
        log.warning("audit export %s: cutting a torn last line (%d bytes)", self._path, torn)
        os.ftruncate(self._fd, keep)
        return keep

    def _cut_torn_end(self, size: int) -> int:
        """Cut a last line without its newline (a holder died mid-write); the new size."""
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return size
        start = max(0, size - EXPORT_TAIL_READ_BYTES)
        tail = os.pread(self._fd, size - start, start)
        whole = tail.rfind(b"\n") + 1
        if whole == 0 and start > 0:
            return size  # no line end in the tail: not a file of records; leave it be
        return self._cut(start + whole, len(tail) - whole)

    def _take_others(self, present: set[int]) -> int:
        """Add the indices of what others appended since ``_end`` to ``present``; the size."""
        size = os.fstat(self._fd).st_size
        if size == self._end:
            return size
        size = self._cut_torn_end(size)
        start = self._end if 0 <= self._end <= size else 0
        start = max(start, size - EXPORT_TAIL_READ_BYTES)
        lines = os.pread(self._fd, size - start, start).splitlines()
        if 0 < start != self._end and lines:
            lines = lines[1:]  # read from mid-line: the first is a part
        present.update(_indices(lines))
        return size

    # -- a gap ---------------------------------------------------------------------------
    def _left_out(self, records: Sequence[bytes]) -> None:
        first, last = _index(records[0]), _index(records[-1])
        if self._gap is None:
            self._gap = (first, last, len(records))
            log.error(
                "audit export %s: lock held elsewhere for %g s; records from index %s are not "
                "written to the file until it is free (the log has them; "
                "`garrison audit export` writes them)",
                self._path,
                EXPORT_LOCK_WAIT_S,
                first,
            )
        else:
            self._gap = (self._gap[0], last, self._gap[2] + len(records))

    def _gap_closed(self) -> None:
        assert self._gap is not None
        first, last, count = self._gap
        self._gap = None
        log.error(
            "audit export %s: %d records, index %s to %s, are not in the file (its lock was "
            "held elsewhere); `garrison audit export` writes them",
            self._path,
            count,
            first,
            last,
        )


def _write_all(fd: int, data: bytes) -> None:
    done = os.write(fd, data)  # a regular file takes it whole unless the disk is full
    if done < len(data):
        view = memoryview(data)[done:]
        while view:
            view = view[os.write(fd, view) :]


def _index(record: bytes) -> int | None:
    try:
        index = orjson.loads(record).get("i")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
        return index
    return None


def _indices(lines: Iterable[bytes]) -> Iterable[int]:
    for line in lines:
        index = _index(line)
        if index is not None:
            yield index
