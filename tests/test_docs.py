"""The docs keep up with the code: every command and every limit is documented."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from garrison.cli.main import cli
from garrison.gateway.limits import GatewayLimits
from garrison.mock.responses import WORDS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(group: click.Group, prefix: str = "garrison") -> list[str]:
    names: list[str] = []
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            names.extend(_commands(command, full))
        else:
            names.append(full)
    return names


def test_every_cli_command_is_in_the_cli_reference() -> None:
    text = (DOCS / "cli.md").read_text()
    missing = [c for c in _commands(cli) if f"`{c}" not in text]
    assert missing == []


def test_every_limit_is_in_the_operations_guide() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = [f.name for f in dataclasses.fields(GatewayLimits) if f"`{f.name}`" not in text]
    assert missing == []


def test_readme_top_shows_the_two_commands() -> None:
    top = "\n".join((DOCS.parent / "README.md").read_text().splitlines()[:20])
    assert "make run" in top and "make test" in top


# ── snippets run as pasted ─────────────────────────────────────────────────────────────────
# A fenced block is skipped only when the line before it says so, with a reason:
#     <!-- docs-test: skip — why it cannot run here -->
SKIP_MARK = re.compile(r"<!-- docs-test: skip\s*[—:-]\s*(?P<why>\S.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
RUNNABLE = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
# The whole quickstart, servers started and stopped, on a loaded machine.
SNIPPETS_TIMEOUT_S = 180


@dataclasses.dataclass(frozen=True)
class Snippet:
    lang: str  # "sh" or "python"
    body: str
    line: int  # where the block starts in its file
    skip: str | None  # the stated reason, when marked


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


@pytest.mark.parametrize("doc", ["docs/quickstart.md", "README.md"])
def test_every_snippet_is_runnable_or_says_why_not(doc: str) -> None:
    """Each skipped block states a reason; a document with blocks has at least one that
    runs or every one of them explains itself."""
    blocks = snippets(DOCS.parent / doc)
    assert blocks, f"{doc} has no shell or Python blocks"
    for block in blocks:
        assert block.skip is None or len(block.skip) >= 10, (doc, block.line)


def test_skip_marks_are_read_only_from_the_line_just_before_a_block(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- docs-test: skip — needs a hosted API key -->\n```sh\necho a\n```\n\n"
        "<!-- docs-test: skip — far away -->\n\ntext\n```sh\necho b\n```\n"
        "```python\nprint(1)\n```\n```text\nnot run\n```\n"
    )
    found = snippets(doc)
    assert [(s.lang, s.body, s.skip) for s in found] == [
        ("sh", "echo a\n", "needs a hosted API key"),
        ("sh", "echo b\n", None),
        ("python", "print(1)\n", None),
    ]


@pytest.mark.e2e
def test_the_quickstart_runs_as_pasted(tmp_path: Path) -> None:
    """docs/quickstart.md, every block not marked, in one bash session in an empty directory,
    against the mock upstream it starts, on free loopback ports; it must finish cleanly."""
    script = as_one_script(snippets(DOCS / "quickstart.md"))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "GARRISON_PORT": str(free_port()),
        "UPSTREAM_PORT": str(free_port()),
        "COLUMNS": "200",
    }
    src = str(DOCS.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    # Output to files: a server left running would hold a pipe open past the script's end.
    with (tmp_path / "out.txt").open("w") as stdout, (tmp_path / "err.txt").open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its background servers too are ended below
        )
        try:
            proc.wait(timeout=SNIPPETS_TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    # The two clients' answers: lines of the mock's words.
    answers = [line for line in out.splitlines() if line and set(line.split()) <= set(WORDS)]
    assert len(answers) >= 2, out
    # The approvals queue showed ben the proposal that he then approved.
    change_ids = re.findall(r"chg_[0-9a-f]+", out)
    assert len(change_ids) >= 2 and len(set(change_ids)) == 1, out
