"""A model's own CA bundle and client certificate: an https upstream on loopback with a CA
made here that demands a client certificate. With the right files the call goes through;
without them it fails with a 502 in the API's shape, recorded in the audit log, and the
system's CAs are never used in their place. Models are registered through the admin API."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from garrison.domain import AuthStyle, Level, Model, UpstreamApi
from garrison.domain.upstream_tls import TLS_PATH_MAX_CHARS, UpstreamTls
from garrison.tls.upstream import (
    MAX_UPSTREAM_TLS_CONTEXTS,
    UPSTREAM_TLS_CHECK_S,
    UpstreamTlsContexts,
)
from tests.support.admin import admin_call
from tests.support.certs import Ca, issue, make_ca
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e


@dataclass
class Pki:
    server_ca: Ca
    client_ca: Ca
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by a CA the upstream does not trust
    stranger_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca = make_ca(tmp_path / "server-ca", "upstream-ca")
    client_ca = make_ca(tmp_path / "client-ca", "client-ca")
    other_ca = make_ca(tmp_path / "other-ca", "other-ca")
    files = {n: tmp_path / f"{n}.pem" for n in ("cc", "ck", "sc", "sk")}
    issue(client_ca, files["cc"], files["ck"], name="garrison-gateway", client=True)
    issue(other_ca, files["sc"], files["sk"], name="garrison-gateway", client=True)
    return Pki(server_ca, client_ca, files["cc"], files["ck"], files["sc"], files["sk"])


@pytest.fixture
async def upstream(pki: Pki, tmp_path: Path) -> AsyncIterator[tuple[int, list[str]]]:
    """https://127.0.0.1:PORT/v1/chat/completions, client certificate required; yields the
    port and the subjects of the client certificates it saw."""
    cert, key = tmp_path / "upstream.pem", tmp_path / "upstream-key.pem"
    issue(pki.server_ca, cert, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.client_ca.file))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(str(peer["subject"]) if peer else "")
        body = await request.json()
        return web.json_response(
            {
                "id": "chatcmpl-tls",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "over mutual TLS"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield int(runner.addresses[0][1]), seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path / "w")
    try:
        yield w
    finally:
        await stop_world(w)


async def _add_model(world: World, name: str, port: int, **tls: Any) -> tuple[int, Any]:
    body = {
        "name": name,
        "upstream_url": f"https://127.0.0.1:{port}/v1",
        "upstream_model": "tls-model",
        "level": "internal",
        **{k: str(v) for k, v in tls.items()},
    }
    return await admin_call(world, world.admin_key, "POST", "/models", body)


async def _chat(world: World, model: str) -> tuple[int, Any]:
    await world.reload()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {world.keys['alice']}"},
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def _outcome(world: World, model: str) -> str:
    done = [e for e in world.events("request.completed") if e.get("model") == model]
    assert done, f"no outcome recorded for {model}"
    return str(done[-1]["data"]["outcome"])


async def test_right_ca_and_client_cert_go_through(
    world: World, pki: Pki, upstream: tuple[int, list[str]]
) -> None:
    port, seen = upstream
    status, body = await _add_model(
        world,
        "mtls",
        port,
        tls_ca_file=pki.server_ca.file,
        tls_client_cert_file=pki.client_cert,
        tls_client_key_file=pki.client_key,
    )
    assert status == 201, body
    status, answer = await _chat(world, "mtls")
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "over mutual TLS"
    assert answer["model"] == "mtls"
    assert seen and "garrison-gateway" in seen[-1]
    await world.settle()
    assert _outcome(world, "mtls") == "ok"
    # The listing shows where the files are (paths, never their contents).
    status, models = await admin_call(world, world.admin_key, "GET", "/models")
    row = next(m for m in models if m["name"] == "mtls")
    assert row["tls_ca_file"] == str(pki.server_ca.file)
    assert row["tls_client_key_file"] == str(pki.client_key)
    created = [e for e in world.events("model.created") if e.get("model") == "mtls"]
    assert created[-1]["data"]["upstream_tls"]["tls_ca_file"] == str(pki.server_ca.file)


@pytest.mark.parametrize(
    "which",
    ["system-cas", "ca-without-client-cert", "untrusted-client-cert", "wrong-ca"],
)
async def test_wrong_or_missing_settings_fail_with_an_audited_502(
    world: World, pki: Pki, upstream: tuple[int, list[str]], which: str
) -> None:
    port, seen = upstream
    tls: dict[str, Any] = {
        "system-cas": {},
        "ca-without-client-cert": {"tls_ca_file": pki.server_ca.file},
        "untrusted-client-cert": {
            "tls_ca_file": pki.server_ca.file,
            "tls_client_cert_file": pki.stranger_cert,
            "tls_client_key_file": pki.stranger_key,
        },
        # The client CA is not the upstream's: its certificate does not verify.
        "wrong-ca": {
            "tls_ca_file": pki.client_ca.file,
            "tls_client_cert_file": pki.client_cert,
            "tls_client_key_file": pki.client_key,
        },
    }[which]
    status, body = await _add_model(world, "bad", port, **tls)
    assert status == 201, body
    status, answer = await _chat(world, "bad")
    assert status == 502, answer
    assert answer["error"]["code"] == "upstream_error"
    assert answer["error"]["type"]  # the OpenAI error shape
    assert seen == []  # no request ever reached the upstream's handler
    await world.settle()
    assert _outcome(world, "bad") == "upstream_error"


async def test_files_gone_after_registration_fail_the_call_not_the_gateway(
    world: World, pki: Pki, upstream: tuple[int, list[str]], tmp_path: Path
) -> None:
    port, _ = upstream
    ca_copy = tmp_path / "ca-copy.pem"
    ca_copy.write_bytes(pki.server_ca.file.read_bytes())
    status, body = await _add_model(
        world,
        "fragile",
        port,
        tls_ca_file=ca_copy,
        tls_client_cert_file=pki.client_cert,
        tls_client_key_file=pki.client_key,
    )
    assert status == 201, body
    assert (await _chat(world, "fragile"))[0] == 200
    ca_copy.write_text("truncated by a bad deploy\n")
    world.gateway.state.upstream_tls = UpstreamTlsContexts()  # as after a restart
    status, answer = await _chat(world, "fragile")
    assert status == 502 and answer["error"]["code"] == "upstream_error"
    await world.settle()
    assert _outcome(world, "fragile") == "upstream_error"
    # Other models are untouched.
    assert (await _chat(world, "assistant"))[0] == 200


async def test_one_context_per_distinct_setting(
    world: World, pki: Pki, upstream: tuple[int, list[str]]
) -> None:
    port, _ = upstream
    files = {
        "tls_ca_file": pki.server_ca.file,
        "tls_client_cert_file": pki.client_cert,
        "tls_client_key_file": pki.client_key,
    }
    for name in ("twin-a", "twin-b"):
        status, body = await _add_model(world, name, port, **files)
        assert status == 201, body
        assert (await _chat(world, name))[0] == 200
    cache = world.gateway.state.upstream_tls
    assert len(cache) == 1
    model_a = world.gateway.state.snapshot.models["twin-a"]
    model_b = world.gateway.state.snapshot.models["twin-b"]
    assert cache.for_model(model_a) is cache.for_model(model_b)


def test_the_context_cache_is_bounded(pki: Pki) -> None:
    cache = UpstreamTlsContexts()
    path = pki.server_ca.file
    for i in range(MAX_UPSTREAM_TLS_CONTEXTS + 5):
        # Distinct settings: the same CA file spelled another way each time (``/./`` * i).
        tls = UpstreamTls(ca_file=f"{path.parent}/{'./' * i}{path.name}")
        cache.for_model(dataclasses.replace(_MODEL, upstream_tls=tls))
    assert len(cache) == MAX_UPSTREAM_TLS_CONTEXTS


_MODEL = Model(
    id="mdl_x",
    name="x",
    upstream_url="https://127.0.0.1:1/v1",
    upstream_model="x",
    api=UpstreamApi.OPENAI,
    auth_style=AuthStyle.NONE,
    level=Level.INTERNAL,
    compartments=frozenset(),
)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tls_ca_file": "ca.pem"}, "tls_ca_file: must be an absolute path"),
        ({"tls_client_cert_file": "/etc/hosts"}, "go together: give both"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file /nonexistent/ca.pem: no such file"),
        ({"tls_ca_file": "/etc/hostname\n"}, "control characters"),
        ({"tls_ca_file": "/dev/zero"}, "tls_ca_file /dev/zero: not a regular, non-empty file"),
        ({"tls_ca_file": "/dev/stdin"}, "not a regular, non-empty file"),
        ({"tls_ca_file": "/" + "a" * TLS_PATH_MAX_CHARS}, "tls_ca_file"),
    ],
)
async def test_registration_refuses_bad_tls_settings(
    world: World, fields: dict[str, str], expected: str
) -> None:
    status, body = await _add_model(world, "refused", 8443, **fields)
    assert status == 400, body
    message = body["error"]["message"]
    assert expected in message, message
    status, models = await admin_call(world, world.admin_key, "GET", "/models")
    assert "refused" not in {m["name"] for m in models}


async def test_tls_settings_need_an_https_upstream(world: World, pki: Pki) -> None:
    body = {
        "name": "plain",
        "upstream_url": "http://127.0.0.1:9/v1",
        "tls_ca_file": str(pki.server_ca.file),
    }
    status, answer = await admin_call(world, world.admin_key, "POST", "/models", body)
    assert status == 400
    assert "https://" in answer["error"]["message"]


async def test_update_replaces_keeps_and_clears_the_setting(
    world: World, pki: Pki, upstream: tuple[int, list[str]]
) -> None:
    port, _ = upstream
    status, body = await _add_model(world, "moving", port, tls_ca_file=pki.server_ca.file)
    assert status == 201, body
    assert (await _chat(world, "moving"))[0] == 502  # no client certificate yet
    status, result = await admin_call(
        world,
        world.admin_key,
        "PATCH",
        "/models/moving",
        {"tls_client_cert_file": str(pki.client_cert), "tls_client_key_file": str(pki.client_key)},
    )
    assert status == 200, result
    before, after = result["changes"]["upstream_tls"]
    assert before["tls_client_cert_file"] is None
    assert after["tls_ca_file"] == str(pki.server_ca.file)  # kept
    assert (await _chat(world, "moving"))[0] == 200
    # Moving to plain HTTP while the TLS files are set is refused (they would go unused).
    status, result = await admin_call(
        world, world.admin_key, "PATCH", "/models/moving", {"upstream_url": "http://127.0.0.1:9/v1"}
    )
    assert status == 400 and "https://" in result["error"]["message"]
    status, result = await admin_call(
        world, world.admin_key, "PATCH", "/models/moving", {"clear_upstream_tls": True}
    )
    assert status == 200 and result["changes"]["upstream_tls"][1] is None
    assert (await _chat(world, "moving"))[0] == 502  # the system's CAs do not know this one


def test_changed_files_are_picked_up_after_the_check_interval(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the cache's clock
    ca_file = tmp_path / "rotating-ca.pem"
    ca_file.write_bytes(pki.server_ca.file.read_bytes())
    model = dataclasses.replace(_MODEL, upstream_tls=UpstreamTls(ca_file=str(ca_file)))
    cache = UpstreamTlsContexts()
    first = cache.for_model(model)
    ca_file.write_bytes(pki.client_ca.file.read_bytes())  # a renewed bundle
    now[0] += UPSTREAM_TLS_CHECK_S / 2
    assert cache.for_model(model) is first  # not looked at again yet
    now[0] += UPSTREAM_TLS_CHECK_S
    second = cache.for_model(model)
    assert second is not first
    assert isinstance(second, ssl.SSLContext)
    assert [c["subject"] for c in second.get_ca_certs()] == [((("commonName", "client-ca"),),)]
    now[0] += UPSTREAM_TLS_CHECK_S * 2
    assert cache.for_model(model) is second  # unchanged files: the same context
