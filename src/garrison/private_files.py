"""State files readable by the owner only (0600): the database and its WAL and shared-memory
files, the audit and alert JSON-lines copies, the witness copies.

They hold who called what, from where, and (in the database) sealed credentials: nobody but
the service account has any business reading them. Files are created 0600 whatever the
process umask, and a file found wider (made by an older version, or by hand) is narrowed.
SQLite creates ``-wal`` and ``-shm`` with the database file's own mode, so creating the
database 0600 covers them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("garrison")

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# The SQLite files beside a database (WAL mode).
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def narrow(fd_or_path: int | Path) -> None:
    """Remove group and other permissions (logged, not raised, if it cannot be done)."""
    try:
        if isinstance(fd_or_path, int):
            mode = os.fstat(fd_or_path).st_mode
            if mode & 0o077:
                os.fchmod(fd_or_path, stat.S_IMODE(mode) & ~0o077)
        else:
            mode = fd_or_path.stat().st_mode
            if mode & 0o077:
                fd_or_path.chmod(stat.S_IMODE(mode) & ~0o077)
    except OSError as exc:
        log.warning("cannot make %s private (0600): %s", fd_or_path, exc)


def open_private_append(path: Path) -> BinaryIO:
    """Open ``path`` for appending, created 0600 if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    narrow(fd)
    return os.fdopen(fd, "ab")


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole (created or truncated), 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    narrow(fd)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def prepare_sqlite_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its side files copy the mode);
    narrow it and any side files that exist already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        narrow(fd)
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            narrow(side)
