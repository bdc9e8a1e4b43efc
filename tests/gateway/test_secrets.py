"""Secrets are shown once and then only as identifiers: never in logs, audit records, error
bodies, response headers or reprs."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
USER = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Exchange:
    status: int
    headers: str
    body: bytes


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def x_api_key(token: str) -> dict[str, str]:
    return {"x-api-key": token, "anthropic-version": "2023-06-01"}


def secrets_of(world: World) -> dict[str, str]:
    """Every secret in the world, by what it is."""
    found: dict[str, str] = {"upstream key": UPSTREAM_KEY}
    for name, token in {**world.keys, "admin": world.admin_key}.items():
        found[f"key of {name}"] = token
        found[f"secret of {name}"] = secret_of(token)
    key_dir = world.settings.key_dir
    found["pepper"] = (key_dir / "pepper.key").read_text().strip()
    for i, line in enumerate((key_dir / "seal.keys").read_text().split()):
        found[f"seal key {i}"] = line
    for i, line in enumerate((key_dir / "capture.keys").read_text().split()):
        found[f"capture key {i}"] = line
    for i, line in enumerate((key_dir / "audit-signing.keys").read_text().splitlines()):
        found[f"signing key {i}"] = line.split()[1]  # "<key id> <private hex>"
    return found


def leaked(secret_values: dict[str, str], text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [what for what, value in secret_values.items() if value.encode() in data]


async def exchange(
    session: aiohttp.ClientSession,
    world: World,
    path: str,
    headers: dict[str, str],
    body: Any = None,
    *,
    raw: bytes | None = None,
    method: str = "POST",
) -> Exchange:
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    sent = {"content-type": "application/json", **headers}
    async with session.request(method, world.base + path, data=data, headers=sent) as resp:
        text = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        return Exchange(resp.status, text, await resp.read())


async def run_session(world: World) -> list[Exchange]:
    """Good and bad keys, bad bodies, refusals and upstream failures; every reply."""
    keys = world.keys
    alice, bob, carol = keys["alice"], keys["bob"], keys["carol"]
    chat = {"model": "assistant", "messages": USER}
    claude = {"model": "claude", "max_tokens": 8, "messages": USER}
    wrong_secret = f"gk_{key_id(alice)}_{secret_of(carol)}"
    unknown_id = f"gk_{secrets.token_hex(8)}_{secret_of(alice)}"
    out: list[Exchange] = []
    async with aiohttp.ClientSession() as s:
        # allowed calls on every endpoint
        out.append(await exchange(s, world, CHAT, bearer(alice), chat))
        out.append(await exchange(s, world, CHAT, bearer(alice), {**chat, "stream": True}))
        out.append(await exchange(s, world, CHAT, bearer(alice), {**chat, "api_key": alice}))
        embed = {"model": "assistant", "input": "x"}
        out.append(await exchange(s, world, "/v1/embeddings", bearer(bob), embed))
        complete = {"model": "assistant", "prompt": "x"}
        out.append(await exchange(s, world, "/v1/completions", bearer(carol), complete))
        out.append(await exchange(s, world, MESSAGES, x_api_key(alice), claude))
        out.append(await exchange(s, world, MESSAGES, x_api_key(alice), {**claude, "stream": True}))
        out.append(await exchange(s, world, CHAT, bearer(world.admin_key), chat))
        out.append(await exchange(s, world, "/v1/models", bearer(alice), method="GET"))
        # bad keys
        out.append(await exchange(s, world, CHAT, bearer(wrong_secret), chat))
        out.append(await exchange(s, world, CHAT, bearer(unknown_id), chat))
        out.append(await exchange(s, world, CHAT, bearer(alice + "x"), chat))  # malformed
        out.append(await exchange(s, world, CHAT, {"authorization": alice}, chat))  # no scheme
        out.append(await exchange(s, world, CHAT, bearer(keys["bob-netbound"]), chat))
        out.append(await exchange(s, world, MESSAGES, x_api_key(wrong_secret), claude))
        # bad requests and refusals
        out.append(await exchange(s, world, CHAT, bearer(alice), raw=b'{"model": '))
        out.append(await exchange(s, world, CHAT, bearer(alice), {"model": "assistant"}))
        out.append(await exchange(s, world, CHAT, bearer(bob), {**chat, "model": "cyber-model"}))
        out.append(await exchange(s, world, CHAT, bearer(alice), {**chat, "model": "nope"}))
        out.append(await exchange(s, world, "/v1/nope", bearer(alice), chat))
        # upstream failures
        for model in ("m-fail-400", "m-fail-500", "m-drop"):
            out.append(await exchange(s, world, CHAT, bearer(alice), {**chat, "model": model}))
        dropped_stream = {**chat, "model": "m-drop", "stream": True}
        out.append(await exchange(s, world, CHAT, bearer(alice), dropped_stream))
        failing_claude = {**claude, "model": "claude-fail-400"}
        out.append(await exchange(s, world, MESSAGES, x_api_key(alice), failing_claude))
        # a revoked key
        world.directory.revoke_key(key_id(carol), now=time.time(), reason="test")
        await world.reload()
        out.append(await exchange(s, world, CHAT, bearer(carol), chat))
    statuses = {e.status for e in out}
    assert {200, 400, 401, 404, 502} <= statuses, statuses  # the session did what it says
    await world.settle()
    return out


async def test_no_secret_in_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await run_session(world)
    assert "upstream failure" in caplog.text  # the gateway's own log lines are captured
    assert leaked(secrets_of(world), caplog.text) == []


async def test_no_secret_in_audit_records(world: World) -> None:
    await run_session(world)
    raw = world.raw_audit()
    assert b"request.denied" in raw and b"request.completed" in raw
    assert leaked(secrets_of(world), raw) == []
    pepper = bytes.fromhex(secrets_of(world)["pepper"])
    assert pepper not in raw


async def test_no_secret_in_response_bodies_or_headers(world: World) -> None:
    replies = await run_session(world)
    values = secrets_of(world)
    for reply in replies:
        assert leaked(values, reply.body) == [], reply
        assert leaked(values, reply.headers) == [], reply


async def test_key_in_an_oversized_header_is_not_echoed_or_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = world.keys["alice"]
    oversized = f"Bearer {token} " + "x" * 9000  # over max_header_field_bytes
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + CHAT, json={"model": "assistant"}, headers={"authorization": oversized}
        ) as resp,
    ):
        body = await resp.read()
    assert 400 <= resp.status < 500
    assert secret_of(token).encode() not in body
    assert secret_of(token) not in caplog.text
    assert world.mock.seen == []


# ── reprs ──────────────────────────────────────────────────────────────────────────────────
async def test_model_repr_shows_no_upstream_key(world: World) -> None:
    model = world.gateway.state.snapshot.models["assistant"]
    assert model.upstream_key is not None
    assert model.upstream_key.reveal() == UPSTREAM_KEY
    assert UPSTREAM_KEY not in repr(model)
    assert UPSTREAM_KEY not in str(model)
    assert UPSTREAM_KEY not in repr(model.upstream_key)


async def test_credential_repr_shows_no_secret_or_hash(world: World) -> None:
    token = world.keys["alice"]
    credential = world.gateway.state.snapshot.credentials[key_id(token)]
    text = repr(credential)
    assert key_id(token) in text  # the identifier is fine
    assert secret_of(token) not in text
    assert credential.secret_hash.hex() not in text
    assert repr(credential.secret_hash) not in text


async def test_snapshot_and_state_reprs_show_no_secret(world: World) -> None:
    state = world.gateway.state
    text = repr(state.snapshot) + repr(state)
    assert UPSTREAM_KEY not in text
    assert state.pepper.hex() not in text
    assert repr(state.pepper) not in text
    for credential in state.snapshot.credentials.values():
        assert repr(credential.secret_hash) not in text
