"""The docs keep up with the code: every command and every limit is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest

from garrison.cli.main import cli
from garrison.gateway.limits import GatewayLimits
from garrison.mock.responses import WORDS
from tests.support.doc_snippets import as_one_script, free_port, run_as_pasted, snippets

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


# ── snippets run as pasted (tests/support/doc_snippets.py) ───────────────────────────────
# The whole quickstart, servers started and stopped, on a loaded machine.
SNIPPETS_TIMEOUT_S = 180


@pytest.mark.parametrize("doc", ["docs/quickstart.md", "docs/scale-out.md", "README.md"])
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
    ports = {"GARRISON_PORT": str(free_port()), "UPSTREAM_PORT": str(free_port())}
    session = run_as_pasted(script, tmp_path, ports, timeout_s=SNIPPETS_TIMEOUT_S)
    out, err = session.out, session.err
    assert session.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    # The two clients' answers: lines of the mock's words.
    answers = [line for line in out.splitlines() if line and set(line.split()) <= set(WORDS)]
    assert len(answers) >= 2, out
    # The approvals queue showed ben the proposal that he then approved.
    change_ids = re.findall(r"chg_[0-9a-f]+", out)
    assert len(change_ids) >= 2 and len(set(change_ids)) == 1, out
