"""The audit outbox across processes: a crash between a change's commit and its integration
loses nothing, and several processes writing one database give one tree.

Gateways run as subprocesses (``garrison serve``); changes go through the admin API and the
host CLI (``garrison keys rotate-seal``, a directory change made on the host).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.bootstrap import Initialized, enroll_locally, init, open_directory
from tests.audit.test_crash import GARRISON, Processes, _free_port, run, wait_http
from tests.support.world import seed

pytestmark = pytest.mark.e2e

# Admin changes sent to each of two gateways at once.
CHANGES_PER_GATEWAY = 12


def _configure(done: Initialized, export: Path, name: str) -> Path:
    """A copy of the config whose JSON-lines export goes to ``export``."""
    text = done.config_path.read_text().replace(
        "[audit]\n", f'[audit]\njsonl_path = "{export}"\n', 1
    )
    path = done.config_path.parent / name
    path.write_text(text)
    return path


def _db_rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def _records(db: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(r[0]) for r in _db_rows(db, "SELECT record FROM audit_events ORDER BY seq")
    ]


def _exported(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def _world(tmp: Path) -> tuple[Initialized, str, Path]:
    """Initialised data dir, seeded, with an enrolled admin; (init result, admin key, db)."""
    done = init(tmp / "data")
    admin = enroll_locally(done.settings, done.codes[0].code.reveal())
    directory = open_directory(done.settings, actor="test")
    try:
        seed(directory, "http://127.0.0.1:9/v1", time.time())
    finally:
        directory.engine.dispose()
    return done, admin.key.token.reveal(), tmp / "data" / "garrison.db"


def _serve(procs: Processes, name: str, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    gateway = procs.start(name, "serve", "--config", str(config), env={"GARRISON_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", gateway)
    return gateway, base


def _verify(config: Path) -> dict[str, Any]:
    verified = run("audit", "verify", "--json", "--no-witness", "--config", str(config))
    assert verified.stdout, verified.stderr
    return {**orjson.loads(verified.stdout), "exit": verified.returncode}


def _freeze(gateway: subprocess.Popen[bytes], db: Path) -> None:
    """SIGSTOP ``gateway`` at a moment it holds no write lock (it writes a lease renewal
    every 2 s and checkpoints when idle): frozen inside a transaction it would block the
    host command instead of merely not integrating."""
    for _ in range(50):
        gateway.send_signal(signal.SIGSTOP)
        conn = sqlite3.connect(db, timeout=0.05)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            gateway.send_signal(signal.SIGCONT)
            time.sleep(0.1)
        finally:
            conn.close()
    raise AssertionError("the gateway never let go of the write lock")


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def test_a_change_committed_but_not_integrated_when_everything_is_killed_is_not_lost(
    tmp_path: Path, procs: Processes
) -> None:
    done, _, db = _world(tmp_path)
    export = tmp_path / "siem.jsonl"
    config = _configure(done, export, "export.toml")
    gateway, _ = _serve(procs, "serve-1", config)
    # The gateway holds a live lease but is frozen: the host command commits its change and
    # then waits for that gateway to integrate it. Kill -9 both inside that window.
    _freeze(gateway, db)
    cli_log = tmp_path / "cli.log"
    with cli_log.open("wb") as err:
        cli = subprocess.Popen(
            [*GARRISON, "keys", "rotate-seal", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "GARRISON_CONFIG": ""},
        )
    deadline = time.monotonic() + 20
    waiting: list[tuple[Any, ...]] = []
    while not waiting and time.monotonic() < deadline:
        waiting = _db_rows(db, "SELECT name FROM audit_outbox WHERE name = 'keys.seal_rotated'")
        time.sleep(0.01)
    cli.kill()
    gateway.kill()
    cli.wait(timeout=10)
    gateway.wait(timeout=10)
    assert waiting, f"the host change never committed: {cli_log.read_text()}"
    assert "keys.seal_rotated" not in {r["name"] for r in _records(db)}, "integrated already"
    assert not any(r["name"] == "keys.seal_rotated" for r in _exported(export))

    # Restart: the new gateway integrates the outbox, exports it and detection sees it.
    again, _ = _serve(procs, "serve-2", config)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(r["name"] == "keys.seal_rotated" for r in _exported(export)):
            break
        time.sleep(0.05)
    again.send_signal(signal.SIGINT)
    assert again.wait(timeout=15) == 0, procs.output("serve-2")
    names = [r["name"] for r in _records(db)]
    assert names.count("keys.seal_rotated") == 1
    assert [r["name"] for r in _exported(export)].count("keys.seal_rotated") == 1
    assert _db_rows(db, "SELECT count(*) FROM audit_outbox") == [(0,)]
    report = _verify(config)
    assert report["ok"] and report["exit"] == 0 and report["pending"] == 0, report
    assert report["events"] == len(names)


async def _admin_changes(base: str, key: str, tag: str, net: str) -> list[str]:
    """CHANGES_PER_GATEWAY network locks through one gateway; their request ids."""
    ids = []
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for n in range(CHANGES_PER_GATEWAY):
            body = {"kind": "network", "target": f"{net}.{n}/32", "reason": f"{tag}-{n}"}
            async with session.post(
                base + "/admin/v1/locks", data=orjson.dumps(body), headers=headers
            ) as resp:
                payload = await resp.read()
                assert resp.status == 201, (resp.status, payload)
                ids.append(resp.headers["x-request-id"])
    return ids


def test_two_gateways_and_the_host_cli_writing_at_once_give_one_tree(
    tmp_path: Path, procs: Processes
) -> None:
    done, admin_key, db = _world(tmp_path)
    exports = [tmp_path / "siem-a.jsonl", tmp_path / "siem-b.jsonl"]
    configs = [_configure(done, exports[0], "a.toml"), _configure(done, exports[1], "b.toml")]
    (gw_a, base_a), (gw_b, base_b) = _serve(procs, "a", configs[0]), _serve(procs, "b", configs[1])
    start = len(_records(db))

    async def everything() -> list[list[str]]:
        cli = asyncio.create_subprocess_exec(
            *GARRISON,
            "keys",
            "rotate-seal",
            "--config",
            str(configs[0]),
            env={**os.environ, "GARRISON_CONFIG": ""},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        proc = await cli
        results = await asyncio.gather(
            _admin_changes(base_a, admin_key, "a", "198.51.100"),
            _admin_changes(base_b, admin_key, "b", "203.0.113"),
        )
        assert await proc.wait() == 0
        return list(results)

    ids_a, ids_b = asyncio.run(everything())
    for gw in (gw_a, gw_b):
        gw.send_signal(signal.SIGINT)
        assert gw.wait(timeout=15) == 0
    records = _records(db)
    assert [r["i"] for r in records] == list(range(len(records)))
    locks = [r["request_id"] for r in records if r["name"] == "lock.created"]
    assert sorted(locks) == sorted(ids_a + ids_b), "a lock event missing or twice"
    assert [r["name"] for r in records].count("keys.seal_rotated") == 1
    assert _db_rows(db, "SELECT count(*) FROM audit_outbox") == [(0,)]
    # Each record since the gateways started was exported exactly once, by whichever
    # process integrated it, and each export is in leaf order.
    a, b = _exported(exports[0]), _exported(exports[1])
    for lines in (a, b):
        assert [r["i"] for r in lines] == sorted({r["i"] for r in lines})
    both = sorted(r["i"] for r in a + b)
    assert both[0] <= start
    assert both == list(range(both[0], len(records))), "exported twice or not at all"
    report = _verify(configs[0])
    assert report["ok"] and report["exit"] == 0 and report["pending"] == 0, report
