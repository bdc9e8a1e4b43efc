"""Documentation run as pasted: the shell and Python blocks of a Markdown file, joined into
one bash session as a reader pastes them into one shell, and run in an empty directory.

A fenced block is skipped only when the line before it says so, with a reason:
    <!-- docs-test: skip — why it cannot run here -->
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SKIP_MARK = re.compile(r"<!-- docs-test: skip\s*[—:-]\s*(?P<why>\S.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
RUNNABLE = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
SRC = Path(__file__).resolve().parent.parent.parent / "src"


@dataclasses.dataclass(frozen=True)
class Snippet:
    lang: str  # "sh" or "python"
    body: str
    line: int  # where the block starts in its file
    skip: str | None  # the stated reason, when marked


@dataclasses.dataclass(frozen=True)
class Session:
    returncode: int
    out: str
    err: str


def snippets(path: Path) -> list[Snippet]:
    """The shell and Python blocks of a Markdown file, in order."""
    text = path.read_text()
    out = []
    for block in FENCE.finditer(text):
        lang = RUNNABLE.get(block["lang"])
        if lang is None:
            continue
        before = text[: block.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = SKIP_MARK.search(before)
        line = text.count("\n", 0, block.start()) + 1
        out.append(Snippet(lang, block["body"], line, marked["why"] if marked else None))
    return out


def as_one_script(blocks: list[Snippet]) -> str:
    """The blocks as one bash session, as a reader pastes them into one shell: shell blocks
    as they are, Python blocks fed to ``python`` started from that shell."""
    # Whatever the blocks leave running (servers started with &) ends with the session.
    parts = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for block in blocks:
        if block.skip is not None:
            continue
        parts.append(f"echo '--- docs line {block.line}' >&2")
        if block.lang == "sh":
            parts.append(block.body)
        else:
            parts.append(f"python - <<'DOCS_PYTHON_SNIPPET'\n{block.body}DOCS_PYTHON_SNIPPET")
    return "\n".join(parts) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_as_pasted(
    script: str, cwd: Path, env_extra: Mapping[str, str], *, timeout_s: float
) -> Session:
    """Run ``script`` in bash in ``cwd`` with this interpreter's ``garrison`` first on the
    PATH, no ``GARRISON_*`` variable of the caller's, and ``env_extra``; every process it
    started is ended afterwards, and a session past ``timeout_s`` is stopped (then its
    return code is the signal's)."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "200"}
    env |= env_extra
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    # Output to files: a server left running would hold a pipe open past the script's end.
    with (cwd / "out.txt").open("w") as stdout, (cwd / "err.txt").open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its background servers too are ended below
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Session(proc.returncode, (cwd / "out.txt").read_text(), (cwd / "err.txt").read_text())
