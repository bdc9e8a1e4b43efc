"""A consistent copy of the database while the gateway runs (SQLite's online backup API).

The copy is taken in one step (``pages=-1``): under WAL a reader sees one snapshot and never
blocks the writers, so the copy is exactly the database as of one commit, however busy the
gateway is (a stepped backup would restart on every write and might never finish). Key files
are never copied: a backup on its own cannot forge a checkpoint or unseal a credential.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

DATABASE_FILE = "garrison.db"
MANIFEST_FILE = "MANIFEST.json"
# Read in blocks of this size to hash the copy (never the whole file in memory).
HASH_BLOCK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    events: int
    checkpoints: int
    newest_checkpoint_size: int
    sha256: str
    bytes: int
    seconds: float


# What `garrison backup` names for a PostgreSQL database: its own tools take the copy.
PG_DUMP_FILE = "garrison.pgdump"


def pg_dump_command(url: str, dest_dir: Path) -> str:
    """The shell command that backs up the PostgreSQL database ``url`` into ``dest_dir``
    (``pg_dump``'s custom format, one consistent snapshot; restore with ``pg_restore``). The
    driver name and any password are left out: pg_dump reads a password from ``PGPASSWORD``
    or ``~/.pgpass``, never from a command line others can see in ``ps``."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql", password=None)
    target = shlex.quote(parsed.render_as_string(hide_password=False))
    dest = shlex.quote(str(dest_dir))
    dump = shlex.quote(str(dest_dir / PG_DUMP_FILE))
    return f"mkdir -m 700 {dest} && pg_dump --format=custom --file={dump} {target}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def backup(source: Path, dest_dir: Path, *, now: float) -> BackupResult:
    """Copy ``source`` into ``dest_dir/garrison.db`` (mode 0600) with a manifest.

    Refuses a ``dest_dir`` that already holds a database (a backup never overwrites one)."""
    started = time.monotonic()
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = dest_dir / DATABASE_FILE
    if target.exists():
        raise FileExistsError(f"{target} exists: a backup never overwrites a database")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        problems = dst.execute("PRAGMA integrity_check").fetchall()
        if problems != [("ok",)]:
            raise sqlite3.DatabaseError(f"the copy fails its integrity check: {problems[:3]}")
        events = int(dst.execute("SELECT count(*) FROM audit_events").fetchone()[0])
        # Directory changes not yet given a leaf index: in the copy, integrated by the first
        # writer that opens it.
        pending = int(dst.execute("SELECT count(*) FROM audit_outbox").fetchone()[0])
        checkpoints, newest = dst.execute(
            "SELECT count(*), coalesce(max(tree_size), 0) FROM audit_checkpoints"
        ).fetchone()
    finally:
        dst.close()
        src.close()
    size = target.stat().st_size
    result = BackupResult(
        path=target,
        events=events,
        checkpoints=int(checkpoints),
        newest_checkpoint_size=int(newest),
        sha256=_sha256(target),
        bytes=size,
        seconds=time.monotonic() - started,
    )
    manifest: dict[str, Any] = {
        "created_at": now,
        "source": str(source),
        "database": DATABASE_FILE,
        "sha256": result.sha256,
        "bytes": size,
        "audit_events": events,
        "audit_outbox": pending,
        "checkpoints": result.checkpoints,
        "newest_checkpoint_size": result.newest_checkpoint_size,
        "key_files": "not included: restore them from where you keep them",
    }
    manifest_path = dest_dir / MANIFEST_FILE
    fd = os.open(manifest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return result
