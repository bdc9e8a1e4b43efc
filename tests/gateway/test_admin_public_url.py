"""DPoP proofs name the listener they are sent to: with the admin API on its own listener,
an admin call's proof must name the admin listener's URL (``[admin] public_url``, or its
own address), and a proof made for the data listener is refused there — and the other way
round. Tokens, keys and the replay cache are the process's, shared by both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from joserfc.jwk import ECKey

from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.dpop import generate_proof_key, make_proof
from garrison.server import Gateway
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

WHOAMI = "/admin/v1/whoami"
CHAT = "/v1/chat/completions"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path / "w")
    try:
        yield w
    finally:
        await stop_world(w)


async def _restart(world: World, **settings: Any) -> None:
    await world.gateway.stop()
    world.gateway = Gateway(dataclasses.replace(world.settings, **settings))
    await world.gateway.start()


def _token(world: World, name: str, key: ECKey, roles: tuple[str, ...] = ()) -> str:
    (principal,) = [p for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    now = time.time()
    tokens = world.gateway.state.tokens
    assert tokens is not None
    return issue_access_token(
        tokens.signer,
        SessionClaims(
            principal_id=principal.id,
            session_id=f"s-{name}",
            jkt=key.thumbprint(),
            amr=("pwd", "otp"),
            acr=None,
            auth_time=now,
            idp_issuer="https://idp.example",
            idp_subject=f"{name}-sub",
            issued_at=now,
            expires_at=now + 600,
            roles=roles,
        ),
    )


async def _send(
    world: World, base: str, method: str, path: str, token: str, key: ECKey, names: str
) -> tuple[int, str]:
    """``method path`` sent to ``base`` with a proof naming ``names + path``; the status and
    the request id."""
    proof = make_proof(key, method=method, url=names + path, now=time.time(), access_token=token)
    body = orjson.dumps({"model": "assistant", "messages": [{"role": "user", "content": "hi"}]})
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            base + path,
            data=body if method == "POST" else None,
            headers={
                "authorization": f"DPoP {token}",
                "dpop": proof,
                "content-type": "application/json",
            },
        ) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers.get("x-request-id", "")


async def _reasons(world: World, name: str) -> list[list[str]]:
    await world.settle()
    return [e["data"]["reasons"] for e in world.events(name)]


async def test_each_listener_takes_only_proofs_that_name_it(world: World) -> None:
    await _restart(world, admin_listen="127.0.0.1:0")
    data = world.base
    admin = f"http://127.0.0.1:{world.gateway.admin_port}"
    key = generate_proof_key()
    admin_token = _token(world, "admin", key, roles=("security-admin",))
    carol_key = generate_proof_key()
    carol = _token(world, "carol", carol_key)

    # Proofs naming the listener they go to are taken.
    status, _ = await _send(world, admin, "GET", WHOAMI, admin_token, key, admin)
    assert status == 200
    status, _ = await _send(world, data, "POST", CHAT, carol, carol_key, data)
    assert status == 200
    # A proof made for the data listener, sent to the admin listener: refused.
    status, _ = await _send(world, admin, "GET", WHOAMI, admin_token, key, data)
    assert status == 401
    assert ["dpop.url_mismatch"] in await _reasons(world, "admin.denied")
    # A proof made for the admin listener, sent to the data listener: refused.
    status, _ = await _send(world, data, "POST", CHAT, carol, carol_key, admin)
    assert status == 401
    assert ["dpop.url_mismatch"] in await _reasons(world, "request.denied")


async def test_a_configured_admin_public_url_is_what_admin_proofs_name(world: World) -> None:
    public = "https://garrison-admin.example"
    await _restart(world, admin_listen="127.0.0.1:0", admin_public_url=public)
    admin = f"http://127.0.0.1:{world.gateway.admin_port}"
    key = generate_proof_key()
    token = _token(world, "admin", key, roles=("security-admin",))
    status, _ = await _send(world, admin, "GET", WHOAMI, token, key, public)
    assert status == 200
    # The listener's own address is not the URL clients use: not taken.
    status, _ = await _send(world, admin, "GET", WHOAMI, token, key, admin)
    assert status == 401
    # The data plane keeps its own URL.
    carol_key = generate_proof_key()
    carol = _token(world, "carol", carol_key)
    status, _ = await _send(world, world.base, "POST", CHAT, carol, carol_key, world.base)
    assert status == 200
    status, _ = await _send(world, world.base, "POST", CHAT, carol, carol_key, public)
    assert status == 401


async def test_one_listener_keeps_one_url(world: World) -> None:
    key = generate_proof_key()
    token = _token(world, "admin", key, roles=("security-admin",))
    status, _ = await _send(world, world.base, "GET", WHOAMI, token, key, world.base)
    assert status == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"https://admin.example/admin"', "[admin] public_url is the origin only"),
        ('"ftp://admin.example"', "[admin] public_url must be an http(s) URL"),
    ],
)
def test_a_bad_admin_public_url_is_one_line(tmp_path: Path, value: str, expected: str) -> None:
    config = tmp_path / "garrison.toml"
    config.write_text(
        '[storage]\ndatabase_url = "sqlite:///x.db"\nkey_dir = "keys"\n'
        f"[admin]\npublic_url = {value}\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(config, env={})
    assert expected in str(refused.value)


def test_config_reads_the_admin_public_url(tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    config.write_text(
        '[storage]\ndatabase_url = "sqlite:///x.db"\nkey_dir = "keys"\n'
        '[admin]\nlisten = "127.0.0.1:8081"\npublic_url = "https://admin.example/"\n'
    )
    assert load_settings(config, env={}).admin_public_url == "https://admin.example"
