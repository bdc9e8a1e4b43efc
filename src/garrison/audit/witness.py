"""Witness copies of checkpoints, kept outside the database.

A witness directory receives every checkpoint: ``latest.json`` (replaced atomically) and
``checkpoints.jsonl`` (appended). Whoever rewrites or truncates the database cannot reach
the copies already published, so ``garrison audit verify --witness-dir`` detects it with a
consistency check against the tree rebuilt from the log.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from garrison.audit.checkpoint import Checkpoint, CheckpointError
from garrison.private_files import PRIVATE_DIR_MODE, open_private_append, write_private_bytes

LATEST = "latest.json"
HISTORY = "checkpoints.jsonl"


class DirectoryWitness:
    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, checkpoint: Checkpoint) -> None:
        self.path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        line = orjson.dumps(checkpoint.to_dict())
        with open_private_append(self.path / HISTORY) as handle:
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp = self.path / (LATEST + ".new")
        write_private_bytes(tmp, line)
        os.replace(tmp, self.path / LATEST)


def read_witness(path: Path) -> list[Checkpoint]:
    """Every checkpoint a witness directory holds (history, else latest)."""
    history = path / HISTORY
    out: list[Checkpoint] = []
    if history.exists():
        for number, line in enumerate(history.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(Checkpoint.from_dict(orjson.loads(line)))
            except (orjson.JSONDecodeError, CheckpointError) as exc:
                raise CheckpointError(f"{history}:{number}: {exc}") from None
    elif (path / LATEST).exists():
        out.append(Checkpoint.from_dict(orjson.loads((path / LATEST).read_bytes())))
    return out
