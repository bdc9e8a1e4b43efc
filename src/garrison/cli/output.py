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


def table(rows: list[dict[str, Any]], columns: list[str], as_json: bool, title: str) -> None:
    if as_json:
        emit_json(rows)
        return
    out = Table(title=Text(terminal_safe(title)))
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(cell(row.get(c)) for c in columns))
    console.print(out)


@contextmanager
def api(config_path: Path) -> Iterator[AdminClient]:
    client = AdminClient.from_config(config_path)
    try:
        yield client
    finally:
        client.close()
