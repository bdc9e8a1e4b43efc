"""The admin API on its own listener (``[admin] listen``): there and only there; the data
plane on the data listener only. By default both stay on one listener, as before."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.cli.client import resolve_url
from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.server import Gateway
from tests.support.certs import issue, make_ca
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

_CHAT = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}


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


async def _get(
    base: str, path: str, key: str, ssl_context: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(base + path, headers=headers, ssl=ssl_context or True) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


async def _chat(base: str, key: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base + "/v1/chat/completions", json=_CHAT, headers={"authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


async def test_default_one_listener_serves_both(world: World) -> None:
    assert world.gateway.admin_http is None
    status, body = await _get(world.base, "/admin/v1/whoami", world.admin_key)
    assert status == 200, body
    status, _ = await _chat(world.base, world.keys["alice"])
    assert status == 200


async def test_separate_admin_listener_splits_the_routes(world: World) -> None:
    await _restart(world, admin_listen="127.0.0.1:0")
    assert world.gateway.admin_http is not None
    data = world.base
    admin = f"http://127.0.0.1:{world.gateway.admin_port}"
    assert world.gateway.admin_port not in (0, world.gateway.port)

    # The admin API answers on its listener...
    status, body = await _get(admin, "/admin/v1/whoami", world.admin_key)
    assert status == 200, body
    # ...and is an unsupported route on the data listener, even with a valid admin key.
    for path in ("/admin/v1/whoami", "/admin/v1/openapi.json", "/metrics"):
        status, body = await _get(data, path, world.admin_key)
        assert status == 404, path
        assert body["error"]["code"] == "unsupported_route", (path, body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(data + "/admin/v1/enroll", json={"code": "x"}) as resp,
    ):
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "unsupported_route"

    # The data plane answers on its listener and not on the admin one.
    status, _ = await _chat(data, world.keys["alice"])
    assert status == 200
    status, body = await _chat(admin, world.keys["alice"])
    assert status == 404
    assert body["error"]["code"] == "unsupported_route"
    status, body = await _get(admin, "/v1/models", world.keys["alice"])
    assert status == 404 and body["error"]["code"] == "unsupported_route"
    # Health probes answer on both.
    for base in (data, admin):
        status, _ = await _get(base, "/healthz", "")
        assert status == 200
    # The admin listener still knows its own unknown paths, in the admin API's shape.
    status, body = await _get(admin, "/admin/v1/no-such-thing", world.admin_key)
    assert status == 404 and body["error"]["type"] == "not_found"


async def test_admin_listener_serves_tls_when_the_gateway_does(
    world: World, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "pki")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(ca, cert, key)
    await _restart(world, admin_listen="127.0.0.1:0", tls_cert_file=cert, tls_key_file=key)
    context = ssl.create_default_context(cafile=str(ca.file))
    admin = f"https://127.0.0.1:{world.gateway.admin_port}"
    status, body = await _get(admin, "/admin/v1/whoami", world.admin_key, context)
    assert status == 200, body
    with pytest.raises(aiohttp.ClientError):
        await _get(f"http://127.0.0.1:{world.gateway.admin_port}", "/healthz", "")


def test_config_reads_admin_listen_and_the_cli_goes_there(tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    config.write_text(
        '[gateway]\nhost = "0.0.0.0"\nport = 8080\n'
        '[storage]\ndatabase_url = "sqlite:///x.db"\nkey_dir = "keys"\n'
        '[admin]\nlisten = "127.0.0.1:8081"\n'
    )
    settings = load_settings(config, env={})
    assert settings.admin_listen == "127.0.0.1:8081"
    assert resolve_url(config, env={}) == "http://127.0.0.1:8081"
    # With TLS on, the CLI speaks HTTPS to it.
    config.write_text(
        config.read_text().replace(
            "port = 8080\n", 'port = 8080\ntls_cert_file = "c.pem"\ntls_key_file = "k.pem"\n'
        )
    )
    settings = load_settings(config, env={})
    assert settings.tls_cert_file == tmp_path / "c.pem"
    assert resolve_url(config, env={}) == "https://127.0.0.1:8081"
    # An explicit [admin] url still wins.
    config.write_text(config.read_text() + 'url = "https://admin.example:9443"\n')
    assert resolve_url(config, env={}) == "https://admin.example:9443"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[admin]\nlisten = "8081"\n', "[admin] listen address '8081' is not host:port"),
        ("[admin]\nlisten = 8081\n", "[admin] listen must be a string"),
        ('[gateway]\ntls_cert_file = "c.pem"\n', "tls_cert_file and tls_key_file go together"),
        ('[gateway]\ntls_key_file = "k.pem"\n', "tls_cert_file and tls_key_file go together"),
        ('[gateway]\ntls_cert_fle = "c.pem"\n', "did you mean 'tls_cert_file'?"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path: Path, section: str, expected: str) -> None:
    config = tmp_path / "garrison.toml"
    config.write_text('[storage]\ndatabase_url = "sqlite:///x.db"\nkey_dir = "keys"\n' + section)
    with pytest.raises(ConfigError) as refused:
        load_settings(config, env={})
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)
