"""Documents (an incident report, a drill's account) shown where they go.

``--format`` unset: rendered with rich when standard output is a terminal, plain Markdown
otherwise (a pipe or a file gets text a Markdown viewer or a script can use). Asked for,
``markdown``, ``html`` or ``json`` are written as they are. A terminal is what rich says it
is: ``TTY_COMPATIBLE=1`` (or ``FORCE_COLOR``) makes it render anyway, ``TTY_COMPATIBLE=0``
never. Whatever reaches a terminal passes ``terminal_safe`` first: the Markdown is already
escaped against formatting, and control characters in it are shown, not obeyed.
"""

from __future__ import annotations

import html

import click
from markdown_it import MarkdownIt
from rich.console import Console
from rich.markdown import Markdown

from garrison.safe_text import terminal_safe

# The formats a document can be asked for; "md" is the older spelling of "markdown".
FORMATS = ("markdown", "md", "html", "json")


def format_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="markdown, html or json (default: rendered on a terminal, Markdown otherwise).",
    )(fn)


def normal(fmt: str | None) -> str | None:
    return "markdown" if fmt == "md" else fmt


def markdown_to_html(text: str, title: str) -> str:
    """A standalone HTML page of ``text`` (CommonMark with tables; raw HTML in the text is
    escaped, never passed through)."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    safe_title = html.escape(title)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{safe_title}</title></head>\n<body>\n{body}</body></html>\n"
    )


def show_markdown(text: str, console: Console | None = None) -> None:
    """``text`` (Markdown) on standard output: rendered on a terminal, as it is otherwise."""
    out = console or Console()
    if out.is_terminal:
        out.print(Markdown(terminal_safe(text, multiline=True)))
    else:
        click.echo(text if text.endswith("\n") else text + "\n", nl=False)
