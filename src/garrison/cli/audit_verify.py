"""``garrison audit verify``: recompute the tree of the log (SQLite or PostgreSQL) and check
every checkpoint and witness copy."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from garrison.audit.checkpoint import Checkpoint, Signer
from garrison.audit.parallel_verify import verify_parallel
from garrison.audit.sqlite_reader import AuditReader, open_reader, read_errors
from garrison.audit.verify import VerifyReport, verify_log, witness_findings
from garrison.audit.witness import load_witness, read_leaves
from garrison.cli.exits import ExitCode
from garrison.cli.options import config_option
from garrison.config import Settings, load_settings
from garrison.errors import ConfigError, GarrisonError

err = Console(stderr=True)
# Below this many events starting worker processes (~0.5 s) costs more than it saves.
PARALLEL_MIN_EVENTS = 500_000


def reader_for(settings: Settings) -> AuditReader:
    try:
        return open_reader(settings.database_url)
    except ValueError as exc:
        raise ConfigError(f"[storage] database_url: {exc}") from None


@click.command("verify")
@click.option(
    "--witness-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Witness copies to check against (default: the configured witness_dir).",
)
@click.option(
    "--no-witness",
    is_flag=True,
    help="Check the log and its own checkpoints alone, ignoring any witness.",
)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--jobs",
    default=os.cpu_count() or 1,
    show_default="all cores",
    type=int,
    help="Worker processes for the fast path on large logs (1: sequential only).",
)
@config_option
def audit_verify(
    witness_dir: Path | None, no_witness: bool, as_json: bool, jobs: int, config_path: Path
) -> None:
    """Recompute the tree and check every checkpoint and witness copy. Exit 1 on any problem."""
    settings = load_settings(config_path)
    keys = Signer.from_dir(settings.key_dir).public_keys()
    wdir = None if no_witness else (witness_dir or settings.witness_dir)
    copy = load_witness(wdir) if wdir is not None else None
    witness = copy.checkpoints if copy is not None else []
    try:
        with reader_for(settings) as reader:
            total = reader.count()
            checkpoints = reader.checkpoints()
            report = None
            if jobs > 1 and total >= PARALLEL_MIN_EVENTS:
                report = verify_parallel(
                    reader.path, total, checkpoints, keys, witness=witness, jobs=jobs
                )
            if report is None:
                report = _verify_sequential(
                    reader, total, checkpoints, keys, witness, as_json, wdir
                )
            pending = reader.pending()
    except read_errors() as exc:
        # Not a verdict on the log: exit code "could not read" (docs/cli.md, Exit codes).
        raise GarrisonError(f"could not read the audit log: {exc}") from None
    if copy is not None:
        report.problems.extend(
            witness_findings(
                checkpoints, present=copy.present, copies=copy.checkpoints, damaged=copy.damaged
            )
        )
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "ok": report.ok,
                    "events": report.events,
                    "checkpoints": report.checkpoints,
                    "witness_checkpoints": report.witness_checkpoints,
                    "root": report.root,
                    "unsigned_tail": report.unsigned_tail,
                    "pending": pending,
                    "first_bad_index": report.first_bad_index,
                    "problems": [
                        {"kind": p.kind, "index": p.index, "detail": p.detail}
                        for p in report.problems
                    ],
                }
            ).decode()
        )
    else:
        click.echo(
            f"events: {report.events:,}   checkpoints: {report.checkpoints:,}   "
            f"witness copies: {report.witness_checkpoints:,}"
        )
        click.echo(f"root: {report.root}")
        if report.unsigned_tail:
            click.echo(
                f"note: the newest {report.unsigned_tail} event(s) are not yet under a "
                "signed checkpoint"
            )
        if pending:
            click.echo(
                f"note: {pending} directory change(s) wait in the audit outbox for their leaf "
                "index (a running gateway, or the next host command, integrates them)"
            )
        if report.ok:
            click.echo("OK: the log verifies")
        else:
            click.echo(f"FAILED: first bad index {report.first_bad_index}")
            for p in report.problems:
                where = "-" if p.index is None else str(p.index)
                click.echo(f"  {p.kind:<14} at {where:>8}  {p.detail}")
    if not report.ok:
        sys.exit(ExitCode.CHECK_FAILED)


def _verify_sequential(
    reader: AuditReader,
    total: int,
    checkpoints: list[Checkpoint],
    keys: dict[str, Any],
    witness: list[Checkpoint],
    as_json: bool,
    witness_dir: Path | None = None,
) -> VerifyReport:
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json or total < 50_000,
    ) as bar:
        task = bar.add_task("verify", total=total)
        return verify_log(
            reader.indexed_rows(),
            checkpoints,
            keys,
            witness=witness,
            progress=lambda n: bar.update(task, completed=n),
            reread=reader.rows_range,
            leaves=(
                None
                if witness_dir is None
                else lambda start, end: read_leaves(witness_dir, start, end)
            ),
        )
