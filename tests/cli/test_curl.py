"""``garrison curl``: one request signed with the stored session; the token never shown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from garrison.cli.main import cli
from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.client_session import ClientSession, save_session
from garrison.identity.dpop import generate_proof_key
from tests.support.world import World

pytestmark = pytest.mark.e2e


def carol_session(world: World, where: Path) -> tuple[Path, str]:
    key = generate_proof_key()
    now = time.time()
    (carol,) = [p.id for p in world.gateway.state.snapshot.principals.values() if p.name == "carol"]
    tokens = world.gateway.state.tokens
    assert tokens is not None
    token = issue_access_token(
        tokens.signer,
        SessionClaims(
            carol,
            "s-curl",
            key.thumbprint(),
            ("pwd", "otp"),
            None,
            now,
            "https://idp.example",
            "carol",
            now,
            now + 600,
        ),
    )
    session = ClientSession(token, now + 600, key.as_dict(private=True), world.base)
    return save_session(session, where / "session.json"), token


async def curl(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["curl", *args])


async def test_curl_lists_models_and_posts_a_chat(world: World, tmp_path: Path) -> None:
    path, token = carol_session(world, tmp_path)
    listed = await curl("/v1/models", "--session", str(path))
    assert listed.exit_code == 0, listed.output
    assert "assistant" in [m["id"] for m in orjson.loads(listed.stdout)["data"]]
    body = '{"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}'
    chat = await curl("/v1/chat/completions", "-d", body, "--session", str(path))
    assert chat.exit_code == 0, chat.output
    assert orjson.loads(chat.stdout)["choices"]
    assert token not in listed.output + chat.output


async def test_curl_refuses_another_host_and_auth_headers(world: World, tmp_path: Path) -> None:
    path, _ = carol_session(world, tmp_path)
    away = await curl("http://127.0.0.2:9/v1/models", "--session", str(path))
    assert away.exit_code == 2 and "own gateway" in away.output
    header = await curl("/v1/models", "-H", "Authorization: Bearer x", "--session", str(path))
    assert header.exit_code == 2 and "signs the request" in header.output


async def test_a_refusal_sets_the_exit_code(world: World, tmp_path: Path) -> None:
    path, _ = carol_session(world, tmp_path)
    body = '{"model": "cyber-model", "messages": [{"role": "user", "content": "hi"}]}'
    refused = await curl("/v1/chat/completions", "-d", body, "--session", str(path))
    assert refused.exit_code == 4  # carol may not see cyber-model: the plain 404
    assert "HTTP 404" in refused.output
