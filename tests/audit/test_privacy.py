"""Bodies are not stored by default; the optional capture is encrypted with its own key."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import openai
import pytest

from garrison.errors import ConfigError
from garrison.keyring import CAPTURE_FILE, SEAL_FILE, Sealer
from tests.support.world import World, start_world, stop_world

PROMPT = "synthesise the secret compound zeta-9 step by step"


def _db_bytes(world: World) -> bytes:
    data = world.db_path.read_bytes()
    wal = Path(str(world.db_path) + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


async def _call(world: World) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{world.base}/v1", api_key=world.keys["alice"], max_retries=0
    ) as client:
        await client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": PROMPT}]
        )
    await world.settle()


async def test_prompts_are_not_stored_by_default(world: World) -> None:
    await _call(world)
    assert PROMPT.encode() not in _db_bytes(world)
    allowed = world.events("request.allowed")[-1]
    assert len(allowed["data"]["body_sha256"]) == 64
    conn = sqlite3.connect(world.db_path)
    try:
        assert conn.execute("SELECT count(*) FROM audit_captures").fetchone()[0] == 0
    finally:
        conn.close()


async def test_capture_is_encrypted_with_its_own_key_and_bound_by_digest(tmp_path: Path) -> None:
    world = await start_world(tmp_path, capture_bodies=True)
    try:
        await _call(world)
        assert PROMPT.encode() not in _db_bytes(world)
        allowed = world.events("request.allowed")[-1]
        conn = sqlite3.connect(world.db_path)
        try:
            (sealed,) = conn.execute(
                "SELECT sealed FROM audit_captures WHERE request_id = ?", (allowed["request_id"],)
            ).fetchone()
        finally:
            conn.close()
        key_dir = world.settings.key_dir
        body = Sealer.from_dir(key_dir, CAPTURE_FILE).unseal_bytes(bytes(sealed))
        assert PROMPT in body.decode()
        assert hashlib.sha256(body).hexdigest() == allowed["data"]["body_sha256"]
        with pytest.raises(ConfigError):  # the upstream-credential key cannot open it
            Sealer.from_dir(key_dir, SEAL_FILE).unseal_bytes(bytes(sealed))
    finally:
        await stop_world(world)
