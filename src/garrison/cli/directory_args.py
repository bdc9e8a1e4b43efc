"""What the directory commands share: path segments, durations, levels and roles, and how a
two-person proposal is shown."""

from __future__ import annotations

from urllib.parse import quote

import click

from garrison.domain import Level
from garrison.domain.durations import parse_duration

LEVELS = [lv.label for lv in Level]
ROLES = ["security-admin", "approver", "vendor-manager", "auditor"]


def seg(ref: str) -> str:
    """A name or id as one URL path segment."""
    return quote(ref, safe="")


def seconds(text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


def show_pending(pending: dict[str, object]) -> None:
    click.echo(
        f"{pending['id']}: proposed — a second security-admin applies it with "
        f"`garrison change approve {pending['id']}`"
    )
