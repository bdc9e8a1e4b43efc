"""``garrison approvals --follow``: what awaits the caller's decision, live.

It polls ``GET /approvals`` (the admin API shows each caller what they may decide) and prints
one line when an item starts waiting and one when it stops (decided, withdrawn or lapsed).
Ctrl-C ends it cleanly (exit 0); ``--for`` ends it after a while. Memory is bounded: the
API's answer is bounded, and the ids remembered between polls are those of the last answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
import orjson

from garrison.cli.client import AdminClient
from garrison.safe_text import terminal_safe
from garrison.timestamps import rfc3339

# Seconds between polls by default, and the shortest allowed (a tighter loop only loads the
# admin API; approvals are decided by people, in minutes).
FOLLOW_INTERVAL_S = 2.0
FOLLOW_MIN_INTERVAL_S = 0.2
# Items shown from one answer at most (the rest are counted in one line): a flood of
# requests must not scroll the approver's terminal for minutes.
FOLLOW_SHOW_MAX = 200


def _items(waiting: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in waiting.get("access_requests", []):
        out[str(row["id"])] = {"type": "access", **row}
    for row in waiting.get("changes", []):
        out[str(row["id"])] = {"type": "change", **row}
    return out


def describe(item: dict[str, Any]) -> str:
    """One line for a waiting item, caller-chosen text made terminal-safe."""
    if item["type"] == "access":
        hours = round(float(item.get("duration_s") or 0) / 3600, 2)
        text = (
            f"access {item['id']}: {item.get('principal', '?')} asks for "
            f"{item.get('model', '?')} for {hours:g}h: {item.get('reason', '')}"
        )
    else:
        text = (
            f"change {item['id']}: {item.get('kind', '?')} by {item.get('requested_by', '?')}: "
            f"{item.get('summary', '')}"
        )
    return terminal_safe(text)


def follow(
    client: AdminClient,
    *,
    interval: float,
    until: float | None,
    as_json: bool,
    echo: Callable[[str], None] = click.echo,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until ``until`` (None: until interrupted); returns the number of lines printed."""
    known: dict[str, dict[str, Any]] = {}
    printed = 0
    while True:
        now = clock()
        current = _items(client.get("/approvals"))
        events = [("waiting", current[k]) for k in current if k not in known]
        events += [("gone", known[k]) for k in known if k not in current]
        for shown, (state, item) in enumerate(events):
            if shown == FOLLOW_SHOW_MAX:
                echo(f"… and {len(events) - shown} more (garrison approvals --json lists all)")
                break
            if as_json:
                echo(orjson.dumps({"event": state, "at": rfc3339(now), "item": item}).decode())
            else:
                mark = "waiting" if state == "waiting" else "gone   "
                echo(f"{rfc3339(now)} {mark} {describe(item)}")
            printed += 1
        known = current
        if until is not None and clock() + interval > until:
            return printed
        sleep(interval)
