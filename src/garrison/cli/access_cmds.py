"""``garrison access|approvals|changes|change|policy``: just-in-time access, two-person
changes and the organisation's Cedar policies. All but ``policy check`` and ``policy test``
drive the admin API; those two work offline on files (for an organisation's own CI)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from garrison.cli.approvals_follow import FOLLOW_INTERVAL_S, FOLLOW_MIN_INTERVAL_S
from garrison.cli.approvals_follow import follow as follow_approvals
from garrison.cli.directory_args import seg
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, iso_time, table, when
from garrison.domain.durations import parse_duration
from garrison.policy.engine import CompiledPolicies
from garrison.policy.testing import read_policy_dir, run_policy_tests


@click.group()
def access() -> None:
    """Just-in-time access to critical models: request, approve, deny, revoke."""


@access.command("request")
@click.option("--model", required=True, help="The critical model.")
@click.option("--for", "duration", required=True, help="How long, e.g. 2h (at most 8h).")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@config_option
@json_option
def access_request(
    model: str, duration: str, reason: str, config_path: Path, as_json: bool
) -> None:
    """Ask for access (as the principal whose key the CLI presents)."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    body = {"model": model, "duration_s": seconds, "reason": reason}
    with api(config_path) as client:
        created = client.post("/access/requests", body)
    if as_json:
        emit_json(created)
        return
    click.echo(f"{created['id']}: pending until {when(created['expires_at'])}")


@access.command("list")
@click.option("--mine", is_flag=True, help="Only your own requests.")
@config_option
@json_option
def access_list(mine: bool, config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/access/requests", mine="true" if mine else None)
    for row in rows:
        row["created"] = when(row["created_at"])
        row["hours"] = round(row["duration_s"] / 3600, 2)
        row["approved by"] = len(row["approvals"])
    columns = ["id", "principal", "model", "hours", "status", "approved by", "reason", "created"]
    table(rows, columns, as_json, "Access requests")


@access.command("approve")
@click.argument("request_id")
@config_option
def access_approve(request_id: str, config_path: Path) -> None:
    """Approve (approver role; never your own)."""
    with api(config_path) as client:
        result = client.post(f"/access/requests/{seg(request_id)}/approve", {})
    if result["status"] == "approved":
        click.echo(f"{request_id}: approved; grant {result['grant_id']} is active")
    else:
        click.echo(
            f"{request_id}: {result['status']} ({len(result.get('approvals', []))} approval(s))"
        )


@access.command("deny")
@click.argument("request_id")
@click.option("--reason", required=True)
@config_option
def access_deny(request_id: str, reason: str, config_path: Path) -> None:
    with api(config_path) as client:
        client.post(f"/access/requests/{seg(request_id)}/deny", {"reason": reason})
    click.echo(f"{request_id}: denied")


@access.command("cancel")
@click.argument("request_id")
@config_option
def access_cancel(request_id: str, config_path: Path) -> None:
    """Withdraw your own pending request."""
    with api(config_path) as client:
        client.post(f"/access/requests/{seg(request_id)}/cancel", {})
    click.echo(f"{request_id}: cancelled")


@access.command("grants")
@click.option("--mine", is_flag=True, help="Only your own grants.")
@config_option
@json_option
def access_grants(mine: bool, config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/access/grants", mine="true" if mine else None)
    for row in rows:
        row["expires"] = when(row["expires_at"])
    table(rows, ["id", "principal", "model", "state", "expires"], as_json, "Grants")


@access.command("revoke")
@click.argument("grant_id")
@click.option("--reason", required=True)
@config_option
def access_revoke(grant_id: str, reason: str, config_path: Path) -> None:
    """End a grant now."""
    with api(config_path) as client:
        client.post(f"/access/grants/{seg(grant_id)}/revoke", {"reason": reason})
    click.echo(f"{grant_id}: revoked")


@click.command()
@click.option(
    "--follow", is_flag=True, help="Keep watching: a line when an item starts or stops waiting."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=FOLLOW_MIN_INTERVAL_S),
    default=FOLLOW_INTERVAL_S,
    show_default=True,
    help="With --follow: seconds between looks.",
)
@click.option("--for", "duration", help="With --follow: stop after this long, e.g. 10m.")
@config_option
@json_option
def approvals(
    follow: bool, interval: float, duration: str | None, config_path: Path, as_json: bool
) -> None:
    """What awaits your decision: access requests and two-person changes.

    With --follow it keeps watching until Ctrl-C (or --for); --json then prints one JSON
    object a line."""
    if duration is not None and not follow:
        raise click.BadParameter("only with --follow", param_hint="--for")
    if follow:
        until = None
        if duration is not None:
            try:
                until = time.time() + parse_duration(duration)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--for") from None
        with api(config_path) as client:
            try:
                follow_approvals(client, interval=interval, until=until, as_json=as_json)
            except KeyboardInterrupt:
                return
        return
    with api(config_path) as client:
        waiting = client.get("/approvals")
    if as_json:
        emit_json(waiting)
        return
    for row in waiting["access_requests"]:
        row["hours"] = round(row["duration_s"] / 3600, 2)
    table(
        waiting["access_requests"],
        ["id", "principal", "model", "hours", "reason", "approvals"],
        False,
        "Access requests awaiting you",
    )
    table(
        waiting["changes"], ["id", "kind", "summary", "requested_by"], False, "Changes awaiting you"
    )


@click.command()
@click.option("--all", "everything", is_flag=True, help="Decided and lapsed ones too.")
@config_option
@json_option
def changes(everything: bool, config_path: Path, as_json: bool) -> None:
    """Two-person changes waiting for a second admin."""
    with api(config_path) as client:
        rows = client.get("/changes", all="true" if everything else None)
    for row in rows:
        row["requested"] = when(row["requested_at"])
    columns = ["id", "kind", "summary", "status", "requested_by", "requested", "decided_by"]
    table(rows, columns, as_json, "Changes")


@click.group()
def change() -> None:
    """Decide a two-person change (as the second admin)."""


@change.command("approve")
@click.argument("change_id")
@config_option
@json_option
def change_approve(change_id: str, config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        result = client.post(f"/changes/{seg(change_id)}/approve", {})
    if as_json:
        emit_json(result)
        return
    if "result" not in result:  # an authorising change: the proposer takes the step
        click.echo(f"{change_id}: approved; {result.get('for', 'the proposer')} may now proceed")
        return
    click.echo(f"{change_id}: approved and applied {result['result']}")


@change.command("deny")
@click.argument("change_id")
@config_option
def change_deny(change_id: str, config_path: Path) -> None:
    with api(config_path) as client:
        client.post(f"/changes/{seg(change_id)}/deny", {})
    click.echo(f"{change_id}: denied")


@click.group()
def policy() -> None:
    """The organisation's Cedar policies: show, push, explain, check, test."""


@policy.command("show")
@config_option
@json_option
def policy_show(config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        current = client.get("/policy")
    if as_json:
        emit_json(current)
        return
    click.echo(f"# version {current['version']} sha256 {current['sha256']}")
    click.echo(current["text"] or "# (no organisation policies: the base policies alone)")


@policy.command("push")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@config_option
def policy_push(path: Path, config_path: Path) -> None:
    """Propose PATH (a .cedar file or a directory of them) as the organisation policy set; it
    is validated now and takes effect when a second admin approves the change."""
    text = read_policy_dir(path)
    with api(config_path) as client:
        result = client.post("/policy", {"text": text})
    pending = result["pending"]
    click.echo(
        f"{pending['id']}: validated; waiting for a second admin (`garrison change approve`)"
    )


@policy.command("check")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
def policy_check(path: Path) -> None:
    """Parse and validate PATH against Garrison's schema, offline."""
    CompiledPolicies(read_policy_dir(path))
    click.echo(f"OK: {path} is valid against the Garrison schema")


@policy.command("test")
@click.argument("file", type=click.Path(path_type=Path, exists=True))
@json_option
def policy_test(file: Path, as_json: bool) -> None:
    """Run a table of expected decisions (TOML) offline; exit 1 if any case fails."""
    results = run_policy_tests(file)
    rows = [
        {
            "principal": r.principal,
            "model": r.model,
            "expect": r.expect,
            "got": r.got,
            "reasons": list(r.reasons),
            "policies": list(r.policies),
            "result": "pass" if r.passed else f"FAIL {r.note}".strip(),
        }
        for r in results
    ]
    columns = ["principal", "model", "expect", "got", "reasons", "result"]
    table(rows, columns, as_json, f"Policy tests: {file}")
    failed = sum(not r.passed for r in results)
    if not as_json:
        click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@policy.command("explain")
@click.option("--principal", required=True)
@click.option("--model", required=True)
@click.option("--from", "address", default=None, help="Client address of the call.")
@click.option("--at", default=None, help="ISO time of the call (default now).")
@click.option("--justification", is_flag=True, help="The call carries a justification.")
@config_option
@json_option
def policy_explain(
    principal: str,
    model: str,
    address: str | None,
    at: str | None,
    justification: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """The decision, its reason codes and the policies that determined it."""
    body: dict[str, object] = {
        "principal": principal,
        "model": model,
        "justification": justification,
    }
    if address:
        body["address"] = address
    if at:
        body["at"] = iso_time(at, "--at")
    with api(config_path) as client:
        result = client.post("/policy/explain", body)
    if as_json:
        emit_json(result)
        return
    click.echo(f"{result['decision'].upper()}: {result['principal']} → {result['model']}")
    click.echo(f"reasons:  {', '.join(result['reasons'])}")
    click.echo(f"policies: {', '.join(result['policies']) or '(none matched: default deny)'}")
    if result["errors"]:
        click.echo(f"errors:   {'; '.join(result['errors'])}")
    ctx = result["context"]
    click.echo("context:  " + ", ".join(f"{k}={v}" for k, v in ctx.items()))
