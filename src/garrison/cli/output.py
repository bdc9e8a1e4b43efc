"""Output for people (rich tables) and for scripts (``--json``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from garrison.cli.client import AdminClient
from garrison.safe_text import terminal_safe

console = Console()


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso_time(text: str, what: str) -> str:
    """Check an ISO date or time given on the command line; the API takes it as written."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or time", param_hint=what) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def cell(value: Any) -> Text:
    """A table cell: plain text (no rich markup), control characters shown escaped."""
    if value is None:
        text = "-"
    elif isinstance(value, list):
        text = ",".join(str(v) for v in value) or "-"
    else:
        text = str(value)
    return Text(terminal_safe(text))


def is_id_column(column: str) -> bool:
    """Columns whose values the next command takes whole: never cut, never wrapped."""
    return column == "id" or column.endswith("_id") or column in ("key", "change", "request")


def _widths(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, int]:
    return {c: max([len(c)] + [len(cell(r.get(c))) for r in rows]) for c in columns}


def fitting_columns(rows: list[dict[str, Any]], columns: list[str], width: int) -> list[str]:
    """The columns to show in ``width``: ids and the first column always; the others are
    dropped from the right while the table (3 characters of rule and padding per column)
    would not fit."""
    widths = _widths(rows, columns)
    shown = list(columns)
    while sum(widths[c] + 3 for c in shown) + 1 > width:
        droppable = [c for c in shown[1:] if not is_id_column(c)]
        if not droppable:
            break
        shown.remove(droppable[-1])
    return shown


def plain(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Aligned columns without rules or colour, every value whole (for pipes and files)."""
    widths = _widths(rows, columns)
    lines = [[c for c in columns]] + [[cell(r.get(c)).plain for c in columns] for r in rows]
    for values in lines:
        text = "  ".join(v.ljust(widths[c]) for v, c in zip(values, columns, strict=True))
        click.echo(text.rstrip())


def table(rows: list[dict[str, Any]], columns: list[str], as_json: bool, title: str) -> None:
    if as_json:
        emit_json(rows)
        return
    if not console.is_terminal:
        plain(rows, columns)
        return
    shown = fitting_columns(rows, columns, console.width)
    widths = _widths(rows, shown)
    out = Table(title=Text(terminal_safe(title)))
    for column in shown:
        if is_id_column(column):
            out.add_column(column, no_wrap=True, min_width=widths[column], overflow="fold")
        else:
            out.add_column(column, overflow="fold")  # wrapped, never cut with an ellipsis
    for row in rows:
        out.add_row(*(cell(row.get(c)) for c in shown))
    console.print(out)
    dropped = [c for c in columns if c not in shown]
    if dropped:
        console.print(f"(not shown for width: {', '.join(dropped)}; --json has every field)")


@contextmanager
def api(config_path: Path) -> Iterator[AdminClient]:
    client = AdminClient.from_config(config_path)
    try:
        yield client
    finally:
        client.close()
