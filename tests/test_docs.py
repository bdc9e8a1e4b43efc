"""The docs keep up with the code: every command and every limit is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from garrison.cli.main import cli
from garrison.gateway.limits import GatewayLimits

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
