"""The incident report and the drill's account: rendered with rich on a terminal, plain
Markdown in a pipe, and Markdown, HTML or JSON when asked. A terminal is forced with rich's
own switch (``TTY_COMPATIBLE=1``) in a subprocess, or ``Console(force_terminal=True)``."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console

from garrison.cli.rendering import markdown_to_html, show_markdown
from garrison.drill import CallRecord, DrillResult, render
from tests.cli.conftest import Served

pytestmark = pytest.mark.e2e

PIPE = {"TTY_COMPATIBLE": None, "FORCE_COLOR": None, "NO_COLOR": None}
TERMINAL = {"TTY_COMPATIBLE": "1", "FORCE_COLOR": None, "NO_COLOR": None, "TERM": "xterm"}
# A title that would set the terminal's window title if printed as it is.
HOSTILE_TITLE = "leak \x1b]0;pwned\x07 here"


def open_incident(served: Served, title: str = "leak") -> str:
    served.make_principal("bob")
    return served.ok("incident", "open", "--title", title, "--principal", "bob").strip()


def test_the_report_in_a_pipe_is_plain_markdown(served: Served) -> None:
    incident = open_incident(served)
    out = served.ok("incident", "report", incident, env=PIPE)
    assert out.startswith("# ")
    assert "\n## " in out and "\n| " in out  # headings and tables, as written
    assert "\x1b" not in out


def test_the_report_on_a_terminal_is_rendered(served: Served) -> None:
    incident = open_incident(served)
    out = served.ok("incident", "report", incident, env=TERMINAL)
    assert "\x1b[" in out  # styled
    assert not any(line.startswith(("# ", "## ", "| ")) for line in out.splitlines())
    assert "leak" in out


def test_caller_text_cannot_drive_the_terminal(served: Served) -> None:
    incident = open_incident(served, HOSTILE_TITLE)
    out = served.ok("incident", "report", incident, env=TERMINAL)
    assert "\x1b]" not in out and "\x07" not in out
    assert "pwned" in out  # shown, inert


@pytest.mark.parametrize("fmt", ["markdown", "md"])
def test_markdown_when_asked_even_on_a_terminal(served: Served, fmt: str) -> None:
    incident = open_incident(served)
    out = served.ok("incident", "report", incident, "--format", fmt, env=TERMINAL)
    assert out.startswith("# ") and "\x1b[" not in out


def test_html_and_json_when_asked(served: Served) -> None:
    incident = open_incident(served)
    page = served.ok("incident", "report", incident, "--format", "html", env=TERMINAL)
    assert page.lstrip().lower().startswith("<!doctype html") or "<html" in page.lower()
    report = json.loads(served.ok("incident", "report", incident, "--format", "json"))
    assert report["incident"]["id"] == incident


def test_an_unknown_format_is_a_usage_error(served: Served) -> None:
    err = served.usage_error("incident", "report", "inc_x", "--format", "pdf")
    assert "--format" in err


# ── the drill's account (pure: a result in, Markdown out) ──────────────────────────────────
def drill_result() -> DrillResult:
    now = time.time()
    result = DrillResult(started_at=now, first_hostile_at=now + 1)
    result.detected_at = now + 1.2
    result.contained_at = now + 1.3
    result.calls = [CallRecord(who="attacker", address="127.0.1.9", started=now + 1, status=200)]
    result.locks = [
        {"id": "lck_1", "kind": "credential", "target_name": "k`\x1b[2J`"}
        | {"created_by": "p", "created_at": now}
    ]
    result.report_md = "# Incident report\n\n| model | calls |\n|---|---|\n| m | 1 |\n"
    return result


def test_the_drill_account_is_markdown_with_a_result_section() -> None:
    text = render(drill_result())
    assert text.startswith("# Contractor-breach drill\n")
    assert "\n## Result\n" in text and "- result: **" in text
    assert text.count("```") == 2  # the timeline's fence is not broken by a name


def test_the_drill_account_on_a_terminal_is_rendered_and_inert() -> None:
    screen = io.StringIO()
    show_markdown(render(drill_result()), Console(file=screen, force_terminal=True, width=120))
    out = screen.getvalue()
    assert "\x1b[" in out and "Contractor-breach drill" in out
    assert "# Contractor" not in out and "```" not in out
    assert "\x1b[2J" not in out  # the name's escape sequence is shown, not obeyed


def test_the_drill_account_in_a_pipe_is_the_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    text = render(drill_result())
    show_markdown(text, Console(file=io.StringIO(), force_terminal=False))
    assert capsys.readouterr().out == text
    assert "\x1b" not in text  # names in the timeline are made inert in the Markdown too


def test_drill_html_escapes_raw_html() -> None:
    page = markdown_to_html("# T\n\n<script>alert(1)</script>\n", "<b>drill</b>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<title>&lt;b&gt;drill&lt;/b&gt;</title>" in page
    assert "<h1>T</h1>" in page
