"""``garrison alerts|alert|rules|drill``: what detection found, and proving the whole chain."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from garrison.cli.directory_args import seg
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, table, when
from garrison.cli.rendering import format_option, markdown_to_html, normal, show_markdown
from garrison.detect.rules import load_rules
from garrison.safe_text import terminal_safe

# How often `garrison alerts --follow` asks for news.
FOLLOW_POLL_S = 1.0


def _rows(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for a in alerts:
        a["last"] = when(a["last_at"])
        a["subject"] = f"{a['subject']['kind']} {a['subject']['id']}"
        a["actions"] = ",".join(x["action"] for x in a["actions"]) or "-"
    return alerts


COLUMNS = ["id", "severity", "rule_id", "subject", "count", "status", "last", "actions"]


@click.command()
@click.option(
    "--status", default=None, type=click.Choice(["open", "acked", "resolved"]), help="Filter."
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new and updated alerts.")
@click.option("--max-seconds", default=0.0, type=float, hidden=True)  # bounds --follow in tests
@config_option
@json_option
def alerts(
    status: str | None, follow: bool, max_seconds: float, config_path: Path, as_json: bool
) -> None:
    """Alerts raised by detection (newest last)."""
    with api(config_path) as client:
        rows = client.get("/alerts", status=status)
        if as_json and not follow:
            emit_json(rows)
            return
        if not follow:
            table(_rows(rows), COLUMNS, False, "Alerts")
            return
        after = max((r["updated_at"] for r in rows), default=time.time() - 60)
        for row in rows:
            _emit(row, as_json)
        deadline = time.monotonic() + max_seconds if max_seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(FOLLOW_POLL_S)
            fresh = client.get("/alerts", status=status, after=repr(after))
            for row in fresh:
                _emit(row, as_json)
                after = max(after, row["updated_at"])


def _emit(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import orjson

        click.echo(orjson.dumps(row).decode())
        return
    subject = f"{row['subject']['kind']} {row['subject']['id']}"
    actions = ", ".join(x["action"] for x in row["actions"]) or "no action"
    line = (
        f"{when(row['last_at'])}  {row['severity'].upper():8} {row['rule_id']}  {subject}  "
        f"×{row['count']}  {row['status']}  ({actions})  {row['id']}"
    )
    click.echo(terminal_safe(line))


@click.group()
def alert() -> None:
    """Acknowledge or resolve an alert."""


@alert.command("ack")
@click.argument("alert_id")
@click.option("--note", default=None)
@config_option
def alert_ack(alert_id: str, note: str | None, config_path: Path) -> None:
    with api(config_path) as client:
        client.post(f"/alerts/{seg(alert_id)}/ack", {"note": note} if note else {})
    click.echo(f"{alert_id}: acked")


@alert.command("resolve")
@click.argument("alert_id")
@click.option("--note", default=None)
@config_option
def alert_resolve(alert_id: str, note: str | None, config_path: Path) -> None:
    with api(config_path) as client:
        client.post(f"/alerts/{seg(alert_id)}/resolve", {"note": note} if note else {})
    click.echo(f"{alert_id}: resolved")


@click.group()
def rules() -> None:
    """Detection rules."""


@rules.command("check")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@json_option
def rules_check(file: Path, as_json: bool) -> None:
    """Validate a rules file offline (what `[detect] rules` would load)."""
    ruleset = load_rules(file)
    if as_json:
        emit_json(
            {
                "rules": [
                    {"id": r.id, "detector": r.detector, "level": r.severity.label}
                    for r in ruleset.rules
                ],
                "playbooks": [{"id": p.id, "actions": list(p.actions)} for p in ruleset.playbooks],
                "sha256": ruleset.digest,
            }
        )
        return
    click.echo(f"OK: {len(ruleset.rules)} rules, {len(ruleset.playbooks)} playbooks ({file})")


@click.group()
def drill() -> None:
    """Drills that prove detection and containment end to end."""


@drill.command("contractor-breach")
@click.option(
    "--url",
    default=None,
    help="Run against this gateway (admin key from the config or GARRISON_ADMIN_KEY); "
    "default: start a gateway of its own.",
)
@click.option(
    "--upstream-url",
    default=None,
    help="Model server the drill's model points at (default: a mock the drill starts).",
)
@click.option("--keep", type=click.Path(path_type=Path), default=None, help="Keep the data here.")
@format_option
@config_option
@json_option
def drill_contractor_breach(
    url: str | None,
    upstream_url: str | None,
    keep: Path | None,
    fmt: str | None,
    config_path: Path,
    as_json: bool,
) -> None:
    """A contractor's key leaks: detect, contain, report. Exit 1 if a target is missed."""
    import asyncio
    import sys

    from garrison import drill as drills

    async def pointed() -> drills.DrillResult:
        from garrison.cli.client import resolve
        from garrison.mock import MockConfig, MockUpstream

        _, key = resolve(config_path)
        mock = None
        target = upstream_url
        if target is None:
            mock = MockUpstream(MockConfig(tokens=150, chunk_delay_ms=10))
            target = f"http://127.0.0.1:{await mock.start('127.0.0.1', 0)}/v1"
        try:
            return await drills.run_scenario(str(url).rstrip("/"), key, target)
        finally:
            if mock is not None:
                await mock.stop()

    chosen = "json" if as_json else normal(fmt)
    result = asyncio.run(pointed() if url else drills.run_local(keep))
    if chosen == "json":
        emit_json(result.figures())
    elif chosen == "html":
        click.echo(markdown_to_html(drills.render(result), "Contractor-breach drill"), nl=False)
    elif chosen == "markdown":
        click.echo(drills.render(result))
    else:
        show_markdown(drills.render(result))
    if not result.passed:
        sys.exit(1)
