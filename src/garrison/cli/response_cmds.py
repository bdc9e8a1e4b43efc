"""``garrison lock|unlock|locks|incident``: kill switches and incidents, through the admin API."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from garrison.cli.directory_args import seg
from garrison.cli.options import config_option, json_option
from garrison.cli.output import api, emit_json, iso_time, table, when
from garrison.cli.rendering import format_option, normal, show_markdown
from garrison.domain.durations import parse_duration
from garrison.respond.evidence import VERIFY_COMMAND, signing_fingerprint, verify_instructions


@click.group()
def lock() -> None:
    """Lock a credential, principal, vendor, model, network or everything (at once; cuts
    covered calls in flight)."""


def _lock_command(kind: str, help_text: str, takes_target: bool = True) -> None:
    def command(
        reason: str,
        ttl: str | None,
        incident: str | None,
        config_path: Path,
        as_json: bool,
        target: str = "*",
    ) -> None:
        body: dict[str, object] = {"kind": kind, "target": target, "reason": reason}
        if ttl:
            try:
                body["ttl_s"] = parse_duration(ttl)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--ttl") from None
        if incident:
            body["incident"] = incident
        with api(config_path) as client:
            created = client.post("/locks", body)
        if as_json:
            emit_json(created)
            return
        until = f" until {when(created['expires_at'])}" if created.get("expires_at") else ""
        click.echo(f"{created['id']}: {kind} {created['target_name']} locked{until}")

    f = json_option(config_option(command))
    f = click.option("--incident", default=None, help="Link the lock to an incident.")(f)
    f = click.option("--ttl", default=None, help="Lift by itself after this long, e.g. 2h.")(f)
    f = click.option("--reason", required=True, help="Why (kept in the audit log).")(f)
    if takes_target:
        f = click.argument("target")(f)
    lock.command(kind, help=help_text)(f)


_lock_command(
    "credential",
    "Lock a key (its id) or one sign-in session (its ses_ id, from `garrison sessions list`): "
    "refused everywhere, the admin API included; the session's live streams are cut.",
)
_lock_command("principal", "Lock a person or service account, with every key they hold.")
_lock_command("vendor", "Lock a vendor (or any org): every principal and key in it.")
_lock_command("model", "Lock a model: nobody reaches it.")
_lock_command("network", "Lock a source network (CIDR or address): every call from it.")
_lock_command(
    "all",
    "Global lockdown: every model call is refused (the admin API stays open to lift it; "
    "lifting takes two admins).",
    takes_target=False,
)


@click.command()
@click.argument("lock_id")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@config_option
def unlock(lock_id: str, reason: str, config_path: Path) -> None:
    """Lift a lock. A global lockdown needs a second admin to run this too."""
    with api(config_path) as client:
        result = client.post(f"/locks/{seg(lock_id)}/lift", {"reason": reason})
    if result["status"] == "pending":
        click.echo(f"{lock_id}: lift requested; a second admin must confirm with the same command")
    else:
        click.echo(f"{lock_id}: lifted")


@click.command()
@click.option("--all", "include_ended", is_flag=True, help="Include lifted and expired locks.")
@config_option
@json_option
def locks(include_ended: bool, config_path: Path, as_json: bool) -> None:
    """Locks in force."""
    with api(config_path) as client:
        rows = client.get("/locks", all="true" if include_ended else None)
    for row in rows:
        row["placed by"] = row.get("created_by_name") or row["created_by"]
        row["placed"] = when(row["created_at"])
        row["expires"] = when(row["expires_at"])
    columns = ["id", "kind", "target_name", "state", "reason", "placed by", "placed", "expires"]
    table(rows, columns, as_json, "Locks")


# ── incidents ──────────────────────────────────────────────────────────────────────────────
@click.group()
def incident() -> None:
    """Incidents: subjects, status, notes, the blast-radius report and the evidence."""


@incident.command("open")
@click.option("--title", required=True)
@click.option("--vendor", "vendors", multiple=True, help="A vendor involved; repeat.")
@click.option("--principal", "principals", multiple=True, help="A principal involved; repeat.")
@click.option("--credential", "credentials", multiple=True, help="A key id involved; repeat.")
@click.option("--since", default=None, help="Start of the window (ISO time; default now).")
@config_option
def incident_open(
    title: str,
    vendors: tuple[str, ...],
    principals: tuple[str, ...],
    credentials: tuple[str, ...],
    since: str | None,
    config_path: Path,
) -> None:
    """Open an incident."""
    body: dict[str, object] = {
        "title": title,
        "vendors": list(vendors),
        "principals": list(principals),
        "credentials": list(credentials),
    }
    if since:
        body["since"] = iso_time(since, "--since")
    with api(config_path) as client:
        click.echo(client.post("/incidents", body)["id"])


@incident.command("list")
@config_option
@json_option
def incident_list(config_path: Path, as_json: bool) -> None:
    with api(config_path) as client:
        rows = client.get("/incidents")
    for row in rows:
        row["opened"] = when(row["opened_at"])
        row["opened by"] = row.get("opened_by_name") or row["opened_by"]
    table(rows, ["id", "title", "status", "opened by", "opened"], as_json, "Incidents")


@incident.command("status")
@click.argument("incident_id")
@click.argument("status", type=click.Choice(["open", "contained", "resolved", "closed"]))
@click.option("--note", default=None, help="Why.")
@config_option
def incident_status(incident_id: str, status: str, note: str | None, config_path: Path) -> None:
    """Move an incident: open → contained → resolved → closed."""
    body: dict[str, object] = {"status": status}
    if note:
        body["note"] = note
    with api(config_path) as client:
        result = client.patch(f"/incidents/{seg(incident_id)}", body)
    click.echo(f"{incident_id}: {result['from']} → {result['to']}")


@incident.command("note")
@click.argument("incident_id")
@click.argument("text")
@config_option
def incident_note(incident_id: str, text: str, config_path: Path) -> None:
    """Add a note."""
    with api(config_path) as client:
        client.patch(f"/incidents/{seg(incident_id)}", {"note": text})
    click.echo(f"{incident_id}: note added")


@incident.command("report")
@click.argument("incident_id")
@format_option
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write to a file.")
@config_option
def incident_report(incident_id: str, fmt: str | None, out: Path | None, config_path: Path) -> None:
    """The blast-radius report, from the audit log (rendered on a terminal)."""
    chosen = normal(fmt)
    asked = {"markdown": "md", None: "md"}.get(chosen, chosen)
    with api(config_path) as client:
        result = client.get(f"/incidents/{seg(incident_id)}/report", format=asked)
    text = (
        orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n"
        if chosen == "json"
        else result["content"]
    )
    if out is not None:
        out.write_text(text)
        click.echo(f"written to {out}")
    elif chosen is None:
        show_markdown(text)
    else:
        click.echo(text, nl=False)


@incident.command("export")
@click.argument("incident_id")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="A directory to create."
)
@config_option
def incident_export(incident_id: str, out: Path, config_path: Path) -> None:
    """Evidence bundle: events with inclusion proofs, the checkpoint and the public keys,
    checked offline by the command it prints."""
    with api(config_path) as client:
        bundle = client.get(f"/incidents/{seg(incident_id)}/evidence")
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    # No key file beside it: a key shipped in the bundle proves nothing by itself.
    (out / "VERIFY.txt").write_text(verify_instructions(bundle, out))
    click.echo(f"{len(bundle['events'])} events with proofs written to {out}")
    if bundle["not_yet_checkpointed"]:
        click.echo(
            f"{len(bundle['not_yet_checkpointed'])} newer events were not yet under a signed "
            "checkpoint; export again to include them"
        )
    click.echo(f"signed by audit key fingerprint {signing_fingerprint(bundle)}")
    click.echo(f"verify: cd {out} && {VERIFY_COMMAND}")
    click.echo("  (FINGERPRINT obtained independently: `garrison audit pubkey --fingerprint`)")
