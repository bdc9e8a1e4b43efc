"""A file's text as it was at an earlier commit, for differential tests that run old code
beside new code (``None`` when the commit is not in this checkout, e.g. a shallow clone)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source_at(commit: str, path: str) -> bytes | None:
    try:
        return subprocess.run(
            ["git", "show", f"{commit}:{path}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
