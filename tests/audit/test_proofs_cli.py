"""Proofs checked offline, and reading the log back: ``garrison audit prove``, ``pubkey``,
``verify-proof``, ``prove-consistency``, ``export --proofs`` and ``tail``, as subprocesses."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from garrison.audit.checkpoint import Checkpoint, load_public_b64, verify_checkpoint
from garrison.audit.merkle import leaf_hash, verify_inclusion
from garrison.config import CONFIG_FILE
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]


@dataclass(frozen=True)
class Log:
    data: Path
    config: str
    pubkey: Path  # what `garrison audit pubkey` printed
    since: float  # a moment between the two phases of calls
    request_id: str  # one call of the second phase


async def _call(session: aiohttp.ClientSession, world: World, who: str, model: str, i: int) -> str:
    async with session.post(
        world.base + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": f"call {i}"}]},
        headers={"authorization": f"Bearer {world.keys[who]}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
        return resp.headers["x-request-id"]


async def _build(root: Path) -> tuple[float, str]:
    world = await start_world(root)
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                await _call(session, world, "alice", "assistant", i)
                await _call(session, world, "carol", "assistant", i)
            await world.signed()  # the idle writer signs the first phase: two checkpoints
            since = time.time()
            await asyncio.sleep(0.01)
            ids = []
            for i in range(3):
                ids.append(await _call(session, world, "bob", "assistant", i))
                ids.append(await _call(session, world, "alice", "cyber-model", i))
    finally:
        await stop_world(world)
    return since, ids[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GARRISON_CONFIG": ""},
        check=False,
    )


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    root = tmp_path_factory.mktemp("proofs-log")
    since, request_id = asyncio.run(_build(root))
    data = root / "data"
    config = str(data / CONFIG_FILE)
    out = run("audit", "pubkey", "--config", config)
    assert out.returncode == 0, out.stderr
    pubkey = root / "audit.pub"
    pubkey.write_text(out.stdout)
    return Log(data, config, pubkey, since, request_id)


def records(log: Log) -> list[dict[str, Any]]:
    conn = sqlite3.connect(log.data / "garrison.db")
    try:
        rows = conn.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [orjson.loads(r[0]) for r in rows]


def checkpoint_sizes(log: Log) -> list[int]:
    conn = sqlite3.connect(log.data / "garrison.db")
    try:
        return [r[0] for r in conn.execute("SELECT tree_size FROM audit_checkpoints ORDER BY seq")]
    finally:
        conn.close()


def principal_id(log: Log, name: str) -> str:
    conn = sqlite3.connect(log.data / "garrison.db")
    try:
        row = conn.execute("SELECT id FROM principals WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return str(row[0])


def prove(log: Log, ref: str, out: Path) -> dict[str, Any]:
    done = run("audit", "prove", ref, "--out", str(out), "--config", log.config)
    assert done.returncode == 0, done.stderr
    bundle: dict[str, Any] = orjson.loads(out.read_bytes())
    return bundle


def verify_proof(path: Path, pubkey: Path) -> subprocess.CompletedProcess[str]:
    return run("audit", "verify-proof", str(path), "--pubkey", str(pubkey))


def tail(log: Log, *args: str) -> list[dict[str, Any]]:
    out = run("audit", "tail", "--json", *args, "--config", log.config)
    assert out.returncode == 0, out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]


# ── inclusion proofs ───────────────────────────────────────────────────────────────────────
def test_proof_by_index_verifies_offline_with_the_exported_public_key(
    log: Log, tmp_path: Path
) -> None:
    bundle = prove(log, "30", tmp_path / "proof.json")
    assert bundle["index"] == 30
    assert orjson.loads(bundle["record"]) == records(log)[30]
    out = verify_proof(tmp_path / "proof.json", log.pubkey)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK")


def test_proof_by_request_id_proves_that_requests_first_event(log: Log, tmp_path: Path) -> None:
    bundle = prove(log, log.request_id, tmp_path / "proof.json")
    record = orjson.loads(bundle["record"])
    assert record["request_id"] == log.request_id
    assert record["name"] == "request.allowed"
    assert records(log)[bundle["index"]] == record
    out = verify_proof(tmp_path / "proof.json", log.pubkey)
    assert out.returncode == 0, out.stdout + out.stderr


def test_proof_with_an_edited_record_fails_verification(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "proof.json"
    bundle = prove(log, log.request_id, path)
    record = orjson.loads(bundle["record"])
    record["model"] = "some-other-model"
    bundle["record"] = orjson.dumps(record).decode()
    path.write_bytes(orjson.dumps(bundle))
    out = verify_proof(path, log.pubkey)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout


def test_proof_checked_with_a_wrong_public_key_fails(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "proof.json"
    prove(log, "30", path)
    stranger = Ed25519PrivateKey.generate().public_key()
    wrong = tmp_path / "wrong.pub"
    wrong.write_text(
        base64.b64encode(stranger.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    )
    out = verify_proof(path, wrong)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout


# ── consistency proofs ─────────────────────────────────────────────────────────────────────
def test_consistency_proof_between_two_checkpoints_verifies(log: Log, tmp_path: Path) -> None:
    sizes = checkpoint_sizes(log)
    assert len(sizes) >= 2, sizes
    path = tmp_path / "consistency.json"
    made = run(
        "audit",
        "prove-consistency",
        str(sizes[0]),
        str(sizes[-1]),
        "--out",
        str(path),
        "--config",
        log.config,
    )
    assert made.returncode == 0, made.stderr
    out = verify_proof(path, log.pubkey)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"size {sizes[-1]} extends the log at size {sizes[0]}" in out.stdout


# ── export ─────────────────────────────────────────────────────────────────────────────────
def test_export_with_proofs_has_a_verifying_proof_on_every_line(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    out = run("audit", "export", "--proofs", "--out", str(path), "--config", log.config)
    assert out.returncode == 0, out.stderr
    header, *lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    # The operator's keys from `audit pubkey`, not the keys the export names for itself.
    keys = {kid: load_public_b64(b64) for kid, b64 in orjson.loads(log.pubkey.read_bytes()).items()}
    checkpoint = Checkpoint.from_dict(header["checkpoint"])
    verify_checkpoint(checkpoint, keys)
    assert len(lines) == len(records(log)) == checkpoint.tree_size
    for line in lines:
        # The record is exported as the stored string: its bytes are the hashed leaf.
        leaf = leaf_hash(line["record"].encode())
        proof = [bytes.fromhex(p) for p in line["proof"]]
        verify_inclusion(
            leaf, line["index"], checkpoint.tree_size, proof, bytes.fromhex(checkpoint.root)
        )


# ── tail ───────────────────────────────────────────────────────────────────────────────────
def test_tail_by_principal_shows_only_that_principals_events(log: Log) -> None:
    carol = principal_id(log, "carol")
    shown = tail(log, "--principal", "carol", "-n", "1000")
    expected = [r for r in records(log) if r["principal_id"] == carol]
    # Her creation and her key's, then three calls, each allowed and completed.
    assert sum(r["name"].startswith("request.") for r in expected) == 6
    assert shown == expected


def test_tail_by_model_shows_only_that_models_events(log: Log) -> None:
    shown = tail(log, "--model", "cyber-model", "-n", "1000")
    expected = [r for r in records(log) if r["model"] == "cyber-model"]
    assert sum(r["name"].startswith("request.") for r in expected) == 6
    assert shown == expected


def test_tail_since_a_time_shows_only_later_events(log: Log) -> None:
    moment = datetime.fromtimestamp(log.since, UTC).isoformat()
    shown = tail(log, "--since", moment)
    expected = [r for r in records(log) if r["at"] >= log.since]
    assert expected and len(expected) < len(records(log))
    assert shown == expected


def test_tail_n_shows_the_last_n_events_in_order(log: Log) -> None:
    assert tail(log, "-n", "5") == records(log)[-5:]
