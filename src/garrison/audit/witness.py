"""Witness copies of checkpoints, kept outside the database.

A witness directory receives every checkpoint: ``latest.json`` (replaced atomically) and
``checkpoints.jsonl`` (appended, fsynced). Whoever rewrites or truncates the database cannot
reach the copies already published, so ``garrison audit verify --witness-dir`` detects it
with a consistency check against the tree rebuilt from the log.

With each checkpoint the witness also receives the leaf hashes of the log up to it
(``leaves.bin``: 32 bytes per leaf, leaf ``i`` at offset ``32 * i``, written in place so two
processes publishing the same leaves write the same bytes). The verifier trusts them only
where they rebuild a signed root; then a record changed together with its stored leaf hash
is located to its exact index, not just to its signed range.

An append cut short (a full disk, a crash) leaves a last line without its newline: readers
skip it (it was never a whole entry) and the next publish cuts it off before appending. A
damaged line anywhere else is a finding, never a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from garrison.audit.checkpoint import Checkpoint, CheckpointError
from garrison.private_files import PRIVATE_DIR_MODE, open_private_append, write_private_bytes

LATEST = "latest.json"
HISTORY = "checkpoints.jsonl"
LEAVES = "leaves.bin"
LEAF_BYTES = 32


@dataclass(slots=True)
class WitnessCopy:
    """What a witness directory holds, read without trusting it."""

    present: bool = False  # the directory has a history or a latest copy
    checkpoints: list[Checkpoint] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # lines that are not checkpoints
    torn_tail: bool = False  # an append cut short (skipped; repaired by the next publish)


class DirectoryWitness:
    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, checkpoint: Checkpoint) -> None:
        self.path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        line = orjson.dumps(checkpoint.to_dict())
        history = self.path / HISTORY
        _cut_torn_tail(history)
        with open_private_append(history) as handle:
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp = self.path / (LATEST + ".new")
        write_private_bytes(tmp, line)
        os.replace(tmp, self.path / LATEST)

    def leaf_count(self) -> int:
        """Whole leaf hashes held here (a torn last one does not count)."""
        try:
            return (self.path / LEAVES).stat().st_size // LEAF_BYTES
        except OSError:
            return 0

    def publish_leaves(self, start: int, hashes: bytes) -> None:
        """Write leaf hashes ``start…`` in place (idempotent: a leaf's bytes never change)."""
        if not hashes:
            return
        self.path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path / LEAVES, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # owner only, like every state file
            os.pwrite(fd, hashes, start * LEAF_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)

    def latest_size(self) -> int:
        """The tree size of the newest copy here (0: none, or unreadable)."""
        try:
            return Checkpoint.from_dict(orjson.loads((self.path / LATEST).read_bytes())).tree_size
        except (OSError, orjson.JSONDecodeError, CheckpointError, TypeError, AttributeError):
            return 0


def _cut_torn_tail(history: Path) -> None:
    """Drop a last line that lacks its newline (an append cut short) before appending."""
    size = history.stat().st_size if history.exists() else 0
    if size == 0:
        return
    with open(history, "rb") as reader:
        reader.seek(size - 1)
        if reader.read(1) == b"\n":
            return
        reader.seek(0)
        whole = reader.read()
    os.truncate(history, whole.rfind(b"\n") + 1)


def load_witness(path: Path) -> WitnessCopy:
    """Every checkpoint a witness directory holds (history, else latest), with damage named."""
    copy = WitnessCopy()
    history = path / HISTORY
    latest = path / LATEST
    if history.exists():
        copy.present = True
        try:
            raw = history.read_bytes()
        except OSError as exc:  # a directory in its place, no permission: a finding
            copy.damaged.append(f"{history.name}: cannot be read: {exc.strerror or exc}")
            return copy
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            lines.pop()  # no newline after it: an append cut short, never a whole entry
            copy.torn_tail = True
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                copy.checkpoints.append(Checkpoint.from_dict(orjson.loads(line)))
            except (orjson.JSONDecodeError, CheckpointError, TypeError, AttributeError) as exc:
                copy.damaged.append(f"{history.name}:{number}: {exc}")
    elif latest.exists():
        copy.present = True
        try:
            copy.checkpoints.append(Checkpoint.from_dict(orjson.loads(latest.read_bytes())))
        except (OSError, orjson.JSONDecodeError, CheckpointError, TypeError, AttributeError) as exc:
            copy.damaged.append(f"{latest.name}: {exc}")
    return copy


def read_leaves(path: Path, start: int, end: int) -> bytes:
    """Leaf hashes ``[start, end)`` as a witness directory holds them (shorter, or empty,
    where it holds fewer). Never trusted alone: the verifier checks them against a signed
    root first."""
    try:
        with open(path / LEAVES, "rb") as handle:
            handle.seek(start * LEAF_BYTES)
            data = handle.read((end - start) * LEAF_BYTES)
    except OSError:
        return b""
    return data[: len(data) - len(data) % LEAF_BYTES]


def read_witness(path: Path) -> list[Checkpoint]:
    """Every readable checkpoint a witness directory holds (damage is skipped: use
    :func:`load_witness` to see it)."""
    return load_witness(path).checkpoints
