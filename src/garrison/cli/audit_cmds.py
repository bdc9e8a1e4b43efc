"""``garrison audit …``: verify the log, prove and check events offline, tail and export."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from garrison.audit.checkpoint import (
    CheckpointError,
    Signer,
    fingerprint_of,
    load_public_b64,
    public_b64,
    rotate_signing_key,
)
from garrison.audit.events import CLIENT_ADDRESS, caller_address
from garrison.audit.exporters import build_exporters
from garrison.audit.merkle import LeafHashes, ProofError
from garrison.audit.outbox import integrate_or_wait
from garrison.audit.proofs import (
    check_consistency_bundle,
    check_evidence_bundle,
    check_inclusion_bundle,
    keys_with_fingerprints,
    signing_key_id,
)
from garrison.audit.sqlite_reader import (
    prove_consistency,
    prove_inclusion,
)
from garrison.cli.audit_verify import audit_verify, reader_for
from garrison.cli.options import config_option
from garrison.config import Settings, load_settings
from garrison.domain.durations import parse_duration
from garrison.errors import BadRequest, NotFound
from garrison.safe_text import terminal_safe
from garrison.store import make_engine, sqlite_path
from garrison.timestamps import rfc3339

err = Console(stderr=True)
# Poll interval of `audit tail -f`.
TAIL_POLL_S = 0.5


def _integrate_waiting(settings: Settings) -> None:
    """Directory changes still in the audit outbox get their leaf index first (by a live
    gateway, else here), so the tail shows a change made a moment ago."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        return
    engine = make_engine(settings.database_url)
    try:
        integrate_or_wait(
            engine, lambda: build_exporters(settings.audit_jsonl, settings.audit_syslog)
        )
    finally:
        engine.dispose()


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (1h, 7d) nor an ISO time", param_hint="--since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _public_keys(settings: Settings) -> dict[str, str]:
    return {
        kid: public_b64(k) for kid, k in Signer.from_dir(settings.key_dir).public_keys().items()
    }


def _load_pubkeys(text: str) -> dict[str, Any]:
    """A base64 key, a file holding one, or the JSON that `audit pubkey` prints."""
    from garrison.audit.checkpoint import key_id_of

    path = Path(text)
    raw = path.read_text().strip() if path.exists() else text.strip()
    try:
        if raw.startswith("{"):
            data = orjson.loads(raw)
            return {kid: load_public_b64(v) for kid, v in data.items()}
        key = load_public_b64(raw)
    except (orjson.JSONDecodeError, CheckpointError, AttributeError) as exc:
        raise click.BadParameter(f"cannot read a public key from {text!r}: {exc}") from None
    return {key_id_of(key): key}


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


audit.add_command(audit_verify)


@audit.command("pubkey")
@click.option(
    "--fingerprint",
    "fingerprints",
    is_flag=True,
    help="Print each key's id and fingerprint instead (what a checker compares).",
)
@config_option
def audit_pubkey(fingerprints: bool, config_path: Path) -> None:
    """Print the verification keys (JSON: key id → base64 Ed25519 public key)."""
    if fingerprints:
        keys = Signer.from_dir(load_settings(config_path).key_dir).public_keys()
        for kid, key in keys.items():
            click.echo(f"{kid} {fingerprint_of(key)}")
        return
    click.echo(
        orjson.dumps(_public_keys(load_settings(config_path)), option=orjson.OPT_INDENT_2).decode()
    )


@audit.command("rotate-key")
@config_option
def audit_rotate_key(config_path: Path) -> None:
    """Add a new signing key; older keys stay so older checkpoints still verify."""
    kid = rotate_signing_key(load_settings(config_path).key_dir)
    click.echo(f"new signing key {kid}; restart gateways to sign with it")


@audit.command("prove")
@click.argument("ref")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write here (default: stdout)."
)
@config_option
def audit_prove(ref: str, out: Path | None, config_path: Path) -> None:
    """Inclusion proof of an event (leaf index or request id) with its signed checkpoint."""
    settings = load_settings(config_path)
    with reader_for(settings) as reader:
        found = reader.find(ref)
        if found is None:
            raise NotFound(f"no audit event {ref!r}")
        try:
            bundle = prove_inclusion(reader, *found)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
    _emit(bundle.to_dict(_public_keys(settings)), out)


@audit.command("prove-consistency")
@click.argument("old_size", type=int)
@click.argument("new_size", type=int)
@click.option("--out", type=click.Path(path_type=Path), default=None)
@config_option
def audit_prove_consistency(
    old_size: int, new_size: int, out: Path | None, config_path: Path
) -> None:
    """Consistency proof between two signed checkpoints (by tree size)."""
    with reader_for(load_settings(config_path)) as reader:
        try:
            _emit(prove_consistency(reader, old_size, new_size), out)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None


def _emit(data: dict[str, Any], out: Path | None) -> None:
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n")
        click.echo(f"written to {out}", err=True)


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BadRequest(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{path} is not a proof file")
    return data


@audit.command("verify-proof")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--pubkey",
    default=None,
    help="The verification key, obtained independently of the file: base64, a file with "
    "one, or `audit pubkey` JSON.",
)
@click.option(
    "--fingerprint",
    "fingerprints",
    multiple=True,
    help="The signing key's fingerprint (sha256:…), obtained independently (`garrison audit "
    "pubkey --fingerprint` on the gateway host): the file's own copy of the key is used only "
    "if it matches.",
)
def audit_verify_proof(file: Path, pubkey: str | None, fingerprints: tuple[str, ...]) -> None:
    """Check an inclusion or consistency proof, or an evidence bundle, offline. Exit 1 if it
    does not verify. A key shipped inside the file proves nothing by itself (whoever could
    alter the file could replace it): give the key or its fingerprint, obtained elsewhere."""
    bundle = _read_bundle(file)
    if pubkey is None and not fingerprints:
        raise click.UsageError(
            "give the signing key (--pubkey) or its fingerprint (--fingerprint), obtained "
            "independently of the file: a key shipped inside it proves nothing"
        )
    keys = _load_pubkeys(pubkey) if pubkey is not None else bundle.get("public_keys") or {}
    if fingerprints:
        keys = keys_with_fingerprints(keys if isinstance(keys, dict) else {}, fingerprints)
        if not keys:
            click.echo(
                "FAILED: no key with the expected fingerprint"
                + ("" if pubkey is not None else " is in the file")
            )
            sys.exit(1)
    try:
        if bundle.get("type") == "consistency":
            old, new = check_consistency_bundle(bundle, keys)
            click.echo(f"OK: the log at size {new} extends the log at size {old}")
        elif bundle.get("type") == "evidence":
            count, size = check_evidence_bundle(bundle, keys)
            click.echo(f"OK: all {count} events are in the log signed at size {size}")
        else:
            index = check_inclusion_bundle(bundle, keys)
            click.echo(
                f"OK: event {index} is in the log signed at size "
                f"{bundle['checkpoint']['tree_size']}"
            )
    except ProofError as exc:
        click.echo(f"FAILED: {exc}")
        sys.exit(1)
    kid = signing_key_id(bundle)
    if kid is not None and kid in keys:
        click.echo(f"signed by key {kid}, fingerprint {fingerprint_of(keys[kid])}")


def _line(seq: int, record: bytes, names: dict[str, str]) -> str:
    r = orjson.loads(record)
    data = r.get("data", {})
    when = datetime.fromtimestamp(r["at"], UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    extra = []
    shown = {**data, CLIENT_ADDRESS: caller_address(data)}  # either encoding version
    for key in ("status", "outcome", "reasons", CLIENT_ADDRESS, "tokens_in", "tokens_out"):
        if shown.get(key) not in (None, [], ""):
            extra.append(f"{key}={shown[key]}")
    who_id = r.get("principal_id") or r.get("actor") or "-"
    who = names.get(who_id, who_id)  # people by name; other actors (playbooks) as they are
    model = r.get("model") or "-"
    line = f"{seq - 1:>8} {when} {r['name']:<18} {who:<22} {model:<16} {' '.join(extra)}"
    return terminal_safe(line)


@audit.command("tail")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("-n", "lines", default=20, show_default=True, help="How many recent events first.")
@click.option("--principal", default=None, help="Principal name or id.")
@click.option("--vendor", default=None, help="Org name or id.")
@click.option("--model", default=None)
@click.option("--since", default=None, help="A duration (1h, 7d) or an ISO time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@config_option
def audit_tail(
    follow: bool,
    lines: int,
    principal: str | None,
    vendor: str | None,
    model: str | None,
    since: str | None,
    as_json: bool,
    config_path: Path,
) -> None:
    """Recent audit events, filtered; `-f` to follow."""
    settings = load_settings(config_path)
    _integrate_waiting(settings)
    with reader_for(settings) as reader:
        principals: list[str] | None = None
        if principal is not None:
            principals = reader.principal_ids(principal, by_org=False)
        if vendor is not None:
            principals = (principals or []) + reader.principal_ids(vendor, by_org=True)
        rows = reader.query(
            since=_since(since), principals=principals, model=model, limit=None if since else lines
        )
        names = {} if as_json else reader.principal_names()
        last = 0
        try:
            while True:
                for seq, record in rows:
                    click.echo(record.decode() if as_json else _line(seq, record, names))
                    last = seq
                if follow and not as_json:
                    names = reader.principal_names()  # people added meanwhile
                if not follow:
                    return
                time.sleep(TAIL_POLL_S)
                last = max(last, reader.count() if last == 0 else last)
                rows = reader.query(after_seq=last, principals=principals, model=model)
        except KeyboardInterrupt:
            return


def export_line(index: int, record: bytes) -> dict[str, Any]:
    """One exported event. ``record`` is the stored string whose UTF-8 bytes are the hashed
    leaf (proofs are checked against it, never against a re-encoding); ``event`` is that
    record decoded, for tools that want fields; ``time`` is its ``at`` in RFC 3339."""
    event = orjson.loads(record)
    return {
        "index": index,
        "time": rfc3339(float(event["at"])),
        "record": record.decode(),
        "event": event,
    }


@audit.command("export")
@click.option("--since", default=None, help="A duration (1h, 7d) or an ISO time.")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--proofs", is_flag=True, help="Add an inclusion proof to each event.")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@config_option
def audit_export(
    since: str | None, fmt: str, proofs: bool, out: Path | None, config_path: Path
) -> None:
    """Events as JSON lines for a SIEM or an investigator: each line has the record exactly as
    hashed ("record", a string) and the same record parsed ("event"); with --proofs each
    line carries its inclusion proof against the newest checkpoint (first line: that
    checkpoint)."""
    settings = load_settings(config_path)
    handle = open(out, "w") if out else sys.stdout  # noqa: SIM115 - closed below
    try:
        with reader_for(settings) as reader:
            rows = reader.query(since=_since(since))
            if proofs:
                cps = reader.checkpoints()
                if not cps:
                    raise NotFound("no signed checkpoint yet")
                cp = cps[-1]
                hashes = LeafHashes(reader.leaf_hashes(cp.tree_size))
                head = {
                    "checkpoint": cp.to_dict(),
                    "time": rfc3339(cp.at),
                    "public_keys": _public_keys(settings),
                }
                handle.write(orjson.dumps(head).decode() + "\n")
            for seq, record in rows:
                line = export_line(seq - 1, record)
                if proofs and seq - 1 < cp.tree_size:
                    line["proof"] = prove_inclusion(reader, seq - 1, record, hashes).to_dict({})[
                        "proof"
                    ]
                handle.write(orjson.dumps(line).decode() + "\n")
    finally:
        if out:
            handle.close()
