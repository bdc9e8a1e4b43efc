"""`garrison backup` under load, and the restore drill: the copy verifies and serves."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from garrison.config import CONFIG_FILE, Settings, load_settings, render_settings
from garrison.server import Gateway
from tests.support.world import start_world, stop_world

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
CHAT = "/v1/chat/completions"


async def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*GARRISON, *args], capture_output=True, text=True, timeout=120
    )


async def test_backup_under_load_restores_to_a_log_that_verifies_and_a_gateway_that_serves(
    tmp_path: Path,
) -> None:
    world = await start_world(tmp_path / "live")
    config = world.root / "data" / CONFIG_FILE
    dest = tmp_path / "backup"
    stop = asyncio.Event()
    served = 0

    async def load() -> None:
        nonlocal served
        body = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {world.keys['alice']}"}
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                async with session.post(world.base + CHAT, json=body, headers=headers) as resp:
                    assert resp.status == 200
                    served += 1

    try:
        loaders = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(0.3)
        done = await _run("backup", str(dest), "--config", str(config))
        stop.set()
        await asyncio.gather(*loaders)
    finally:
        await stop_world(world)
    assert done.returncode == 0, done.stderr
    assert served > 0
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert (dest / "garrison.db").stat().st_mode & 0o777 == 0o600
    assert not any(p.name.endswith(".key") for p in dest.iterdir())  # no key files
    assert manifest["audit_events"] > 0

    # The drill, as docs/operations.md says: a fresh data directory, the key files from where
    # they are kept, the database from the backup.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copytree(world.root / "data" / "keys", restored / "keys")
    shutil.copy2(dest / "garrison.db", restored / "garrison.db")
    (restored / CONFIG_FILE).write_text(render_settings(Settings.for_data_dir(restored)))
    verify = await _run(
        "audit", "verify", "--no-witness", "--json", "--config", str(restored / CONFIG_FILE)
    )
    assert verify.returncode == 0, (verify.stdout, verify.stderr)
    report = orjson.loads(verify.stdout)
    assert report["ok"] and report["events"] == manifest["audit_events"]

    settings = load_settings(restored / CONFIG_FILE)
    gateway = Gateway(dataclasses.replace(settings, host="127.0.0.1", port=0))
    await gateway.start()
    try:
        headers = {"authorization": f"Bearer {world.keys['alice']}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{gateway.port}/v1/models", headers=headers) as resp,
        ):
            assert resp.status == 200
            listed = {m["id"] for m in (await resp.json())["data"]}
        assert "assistant" in listed  # the restored directory: people, keys, models
    finally:
        await gateway.stop()


def test_backup_never_overwrites_a_database(tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "garrison.db").write_bytes(b"precious")
    data = tmp_path / "data"
    init = subprocess.run(
        [*GARRISON, "init", "--data-dir", str(data)], capture_output=True, text=True, check=False
    )
    assert init.returncode == 0, init.stderr
    out = subprocess.run(
        [*GARRISON, "backup", str(dest), "--config", str(data / CONFIG_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "never overwrites" in out.stderr
    assert (dest / "garrison.db").read_bytes() == b"precious"
