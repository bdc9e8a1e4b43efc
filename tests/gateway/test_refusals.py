"""Every bad input gets a clean error in its API's shape, is audited, and reaches nothing.

Also: what the client sends beyond the parsed body never reaches the upstream, and what the
upstream says about itself in its headers never reaches the client.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from garrison.domain import Status
from garrison.gateway.limits import GatewayLimits
from garrison.mock import LEAK_HEADER, LEAK_ORG
from tests.support.world import UPSTREAM_KEY, World, start_world, stop_world

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = "/v1/messages"
USER = [{"role": "user", "content": "hello"}]
ANTHROPIC_VERSION = "2023-06-01"
SMALL_BODY_LIMIT = 1024


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    sent_headers: CIMultiDictProxy[str]

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]


async def call(
    world: World,
    path: str,
    *,
    key: str | None = None,
    json: Any = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    connector: aiohttp.BaseConnector | None = None,
) -> Reply:
    """One HTTP call to the gateway with a fresh session (closed on return)."""
    sent: dict[str, str] = {}
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    if json is not None:
        data = orjson.dumps(json)
        sent["content-type"] = "application/json"
    sent.update(headers or {})
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, world.base + path, data=data, headers=sent) as resp,
    ):
        body = await resp.read()
        return Reply(resp.status, resp.headers, body, resp.request_info.headers)


async def chat(world: World, key: str | None, model: str = "assistant") -> Reply:
    return await call(world, CHAT, key=key, json={"model": model, "messages": USER})


async def messages(world: World, key: str, body: dict[str, Any]) -> Reply:
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    return await call(world, MESSAGES, json=body, headers=headers)


def openai_error(reply: Reply, status: int, *, code: str | None, type_: str) -> dict[str, Any]:
    """The reply is ``status`` with exactly the OpenAI error envelope; returns the error.
    ``code=None`` leaves the code unchecked."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    doc = orjson.loads(reply.body)
    assert list(doc) == ["error"]
    error = doc["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == type_
    if code is not None:
        assert error["code"] == code
    assert error["param"] is None
    return dict(error)


def anthropic_error(reply: Reply, status: int, *, type_: str) -> dict[str, Any]:
    """The reply is ``status`` with exactly the Anthropic error envelope; returns the error."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    doc = orjson.loads(reply.body)
    assert set(doc) == {"type", "error"}
    assert doc["type"] == "error"
    error = doc["error"]
    assert set(error) == {"type", "message"}
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def only_denial(world: World) -> dict[str, Any]:
    """The one ``request.denied`` event written so far."""
    await world.settle()
    denied = world.events("request.denied")
    assert len(denied) == 1, denied
    return denied[0]


async def assert_denied(world: World, reply: Reply, *reasons: str) -> dict[str, Any]:
    event = await only_denial(world)
    assert event["data"]["reasons"] == list(reasons)
    assert event["data"]["status"] == reply.status
    assert event["request_id"] == reply.request_id
    return event


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


def comparable_headers(reply: Reply) -> dict[str, str]:
    """Response headers minus the ones that differ on every call by design."""
    return {
        k.lower(): v for k, v in reply.headers.items() if k.lower() not in {"date", "x-request-id"}
    }


@pytest.fixture
async def small_body_world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path, limits=GatewayLimits(max_body_bytes=SMALL_BODY_LIMIT))
    try:
        yield w
    finally:
        await stop_world(w)


# ── authentication ─────────────────────────────────────────────────────────────────────────
async def test_missing_credential_is_401_and_audited(any_world: World) -> None:
    world = any_world  # on SQLite and on PostgreSQL
    reply = await chat(world, key=None)
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "credential.missing")


async def test_missing_credential_on_messages_is_401_in_anthropic_shape(world: World) -> None:
    body = {"model": "claude", "max_tokens": 8, "messages": USER}
    reply = await call(world, MESSAGES, json=body, headers={"anthropic-version": ANTHROPIC_VERSION})
    anthropic_error(reply, 401, type_="authentication_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "credential.missing")


async def test_malformed_key_is_401_and_audited(world: World) -> None:
    reply = await chat(world, key="not-a-garrison-key")
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "credential.malformed")


async def test_unknown_key_id_is_401_and_audited(world: World) -> None:
    secret = world.keys["alice"].split("_", 2)[2]
    reply = await chat(world, key=f"gk_{secrets.token_hex(8)}_{secret}")
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "credential.unknown")


async def test_wrong_secret_is_401_identical_to_unknown_id(world: World) -> None:
    real = world.keys["alice"]
    other_secret = world.keys["carol"].split("_", 2)[2]
    wrong_secret = await chat(world, key=f"gk_{key_id(real)}_{other_secret}")
    await world.settle()
    unknown_id = await chat(world, key=f"gk_{secrets.token_hex(8)}_{other_secret}")
    openai_error(wrong_secret, 401, code="invalid_api_key", type_="invalid_request_error")
    assert wrong_secret.body == unknown_id.body  # byte-identical: no oracle
    assert comparable_headers(wrong_secret) == comparable_headers(unknown_id)
    assert world.mock.seen == []
    await world.settle()
    denied = world.events("request.denied")
    assert [e["data"]["reasons"] for e in denied] == [
        ["credential.bad_secret"],
        ["credential.unknown"],
    ]


async def test_refusal_of_a_guessed_secret_names_the_public_key_id(world: World) -> None:
    real = world.keys["alice"]
    other_secret = world.keys["carol"].split("_", 2)[2]
    await chat(world, key=f"gk_{key_id(real)}_{other_secret}")
    await world.settle()
    (denied,) = world.events("request.denied")
    # The id is public; it is what shows someone guessing at one key. No credential is
    # attributed (the secret did not match) and the presented secret is nowhere.
    assert denied["data"]["presented_key_id"] == key_id(real)
    assert denied["credential_id"] is None
    assert other_secret.encode() not in world.raw_audit()


async def test_expired_key_is_401_and_audited(world: World) -> None:
    token = world.keys["bob-short"]
    expires_at = world.gateway.state.snapshot.credentials[key_id(token)].expires_at
    assert expires_at is not None
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)
    reply = await chat(world, key=token)
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    event = await assert_denied(world, reply, "credential.expired")
    assert event["credential_id"] == key_id(token)


async def test_revoked_key_is_401_and_audited(world: World) -> None:
    token = world.keys["carol"]
    world.directory.revoke_key(key_id(token), now=time.time(), reason="test")
    await world.reload()
    reply = await chat(world, key=token)
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    event = await assert_denied(world, reply, "credential.revoked")
    assert event["credential_id"] == key_id(token)


async def test_disabled_principal_is_401_and_audited(world: World) -> None:
    world.directory.set_principal_status("carol", Status.DISABLED, now=time.time())
    await world.reload()
    reply = await chat(world, key=world.keys["carol"])
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    event = await assert_denied(world, reply, "principal.inactive")
    assert event["credential_id"] == key_id(world.keys["carol"])


async def test_key_from_disallowed_network_is_401_and_audited(world: World) -> None:
    reply = await chat(world, key=world.keys["bob-netbound"])  # from 127.0.0.1
    openai_error(reply, 401, code="invalid_api_key", type_="invalid_request_error")
    assert world.mock.seen == []
    event = await assert_denied(world, reply, "credential.network_not_allowed")
    assert event["data"]["client_address"] == "127.0.0.1"


async def test_key_from_its_bound_network_is_served(world: World) -> None:
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    reply = await call(
        world,
        CHAT,
        key=world.keys["bob-netbound"],
        json={"model": "assistant", "messages": USER},
        connector=connector,
    )
    assert reply.status == 200, reply.body
    assert len(world.mock.seen) == 1
    await world.settle()
    assert world.events("request.denied") == []
    allowed = world.events("request.allowed")
    assert [e["data"]["client_address"] for e in allowed] == ["127.0.0.2"]


# ── the body ───────────────────────────────────────────────────────────────────────────────
async def test_malformed_json_is_400_and_audited(world: World) -> None:
    reply = await call(world, CHAT, key=world.keys["alice"], data=b'{"model": "assistant",')
    openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_body_not_an_object_is_400_and_audited(world: World) -> None:
    reply = await call(world, CHAT, key=world.keys["alice"], json=[{"model": "assistant"}])
    openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_missing_model_is_400_and_audited(world: World) -> None:
    reply = await call(world, CHAT, key=world.keys["alice"], json={"messages": USER})
    error = openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert "model" in error["message"]
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_missing_messages_is_400_and_audited(world: World) -> None:
    reply = await call(world, CHAT, key=world.keys["alice"], json={"model": "assistant"})
    error = openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert "messages" in error["message"]
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_missing_messages_on_messages_is_400_in_anthropic_shape(world: World) -> None:
    reply = await messages(world, world.keys["alice"], {"model": "claude", "max_tokens": 8})
    error = anthropic_error(reply, 400, type_="invalid_request_error")
    assert "messages" in error["message"]
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_non_boolean_stream_is_400_and_audited(world: World) -> None:
    body = {"model": "assistant", "messages": USER, "stream": "yes"}
    reply = await call(world, CHAT, key=world.keys["alice"], json=body)
    error = openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert "stream" in error["message"]
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_stream_on_embeddings_is_400_and_audited(world: World) -> None:
    body = {"model": "assistant", "input": "hello", "stream": True}
    reply = await call(world, EMBEDDINGS, key=world.keys["alice"], json=body)
    openai_error(reply, 400, code="invalid_request", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.malformed")


async def test_body_over_limit_by_content_length_is_413_and_audited(
    small_body_world: World,
) -> None:
    world = small_body_world
    padding = "x" * (2 * SMALL_BODY_LIMIT)
    body = {"model": "assistant", "messages": [{"role": "user", "content": padding}]}
    reply = await call(world, CHAT, key=world.keys["alice"], json=body)
    assert int(reply.sent_headers["content-length"]) > SMALL_BODY_LIMIT
    openai_error(reply, 413, code="request_too_large", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.too_large")


async def test_chunked_body_over_limit_is_413_and_audited(small_body_world: World) -> None:
    world = small_body_world

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "assistant", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"x" * (SMALL_BODY_LIMIT // 4)
        yield b'"}]}'

    reply = await call(world, CHAT, key=world.keys["alice"], data=body())
    assert "content-length" not in reply.sent_headers
    assert reply.sent_headers["transfer-encoding"] == "chunked"
    openai_error(reply, 413, code="request_too_large", type_="invalid_request_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.too_large")


async def test_body_over_limit_on_messages_is_413_in_anthropic_shape(
    small_body_world: World,
) -> None:
    world = small_body_world
    padding = "x" * (2 * SMALL_BODY_LIMIT)
    body = {"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": padding}]}
    reply = await messages(world, world.keys["alice"], body)
    anthropic_error(reply, 413, type_="request_too_large")
    assert world.mock.seen == []
    await assert_denied(world, reply, "request.too_large")


# ── the model ──────────────────────────────────────────────────────────────────────────────
async def test_unknown_model_is_404_and_audited(any_world: World) -> None:
    world = any_world  # on SQLite and on PostgreSQL
    reply = await chat(world, key=world.keys["alice"], model="no-such-model")
    openai_error(reply, 404, code="model_not_found", type_="invalid_request_error")
    assert world.mock.seen == []
    event = await assert_denied(world, reply, "model.unknown")
    assert event["model"] == "no-such-model"


async def test_model_beyond_clearance_is_404_identical_to_unknown_model(any_world: World) -> None:
    world = any_world  # on SQLite and on PostgreSQL
    forbidden = await chat(world, key=world.keys["bob"], model="cyber-model")
    await world.settle()
    unknown = await chat(world, key=world.keys["bob"], model="no-such-model")
    openai_error(forbidden, 404, code="model_not_found", type_="invalid_request_error")
    assert forbidden.body == unknown.body  # byte-identical: no oracle
    assert comparable_headers(forbidden) == comparable_headers(unknown)
    assert world.mock.seen == []
    await world.settle()
    denied = world.events("request.denied")
    assert [e["data"]["reasons"] for e in denied] == [
        ["clearance.level", "clearance.compartment", "vendor.ceiling"],  # bob is a contractor
        ["model.unknown"],
    ]


async def test_anthropic_model_on_openai_endpoint_is_404_naming_its_api(world: World) -> None:
    reply = await chat(world, key=world.keys["alice"], model="claude")
    error = openai_error(reply, 404, code="model_wrong_api", type_="invalid_request_error")
    assert "/v1/messages" in error["message"]
    assert world.mock.seen == []
    await assert_denied(world, reply, "model.wrong_api")


async def test_openai_model_on_messages_endpoint_is_404_in_anthropic_shape(world: World) -> None:
    body = {"model": "assistant", "max_tokens": 8, "messages": USER}
    reply = await messages(world, world.keys["alice"], body)
    anthropic_error(reply, 404, type_="not_found_error")
    assert world.mock.seen == []
    await assert_denied(world, reply, "model.wrong_api")


# ── routing ────────────────────────────────────────────────────────────────────────────────
async def test_unknown_endpoint_is_404_in_openai_shape(world: World) -> None:
    reply = await call(world, "/v1/no-such-endpoint", key=world.keys["alice"], json={})
    openai_error(reply, 404, code="unsupported_route", type_="invalid_request_error")
    assert world.mock.seen == []


async def test_wrong_method_is_405_in_openai_shape(world: World) -> None:
    reply = await call(world, CHAT, key=world.keys["alice"], method="GET")
    openai_error(reply, 405, code="invalid_request", type_="invalid_request_error")
    assert world.mock.seen == []


# ── what crosses the gateway ───────────────────────────────────────────────────────────────
async def test_client_redirect_fields_do_not_reach_upstream_body(world: World) -> None:
    evil = "http://evil.example/v1"
    redirect = {
        "api_base": evil,
        "base_url": evil,
        "api_key": "sk-client-chosen-key-123456",
        "extra_headers": {"x-evil": "1", "authorization": "Bearer sk-client-chosen"},
        "custom_llm_provider": "evil",
        "extra_body": {"api_base": evil},
    }
    body = {"model": "assistant", "messages": USER, **redirect}
    reply = await call(world, CHAT, key=world.keys["alice"], json=body)
    assert reply.status == 200, reply.body
    [seen] = world.mock.seen
    forwarded = orjson.loads(seen.body)
    assert set(forwarded) & set(redirect) == set()
    assert forwarded["messages"] == USER and forwarded["model"] == "mock-small"
    assert b"evil" not in seen.body and b"sk-client-chosen" not in seen.body
    assert "x-evil" not in seen.headers
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_client_headers_do_not_reach_upstream(world: World) -> None:
    token = world.keys["alice"]
    client_headers = {
        "x-api-key": "sk-client-supplied-x-api-key",
        "x-forwarded-host": "evil.example",
        "x-forwarded-for": "10.9.9.9",
        "x-custom-header": "client-custom-value",
        "openai-organization": "org-client-chosen",
        "cookie": "session=client-cookie-value",
        "host": "evil.example",
    }
    reply = await call(
        world,
        CHAT,
        key=token,
        json={"model": "assistant", "messages": USER},
        headers=client_headers,
    )
    assert reply.status == 200, reply.body
    [seen] = world.mock.seen
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name in ("x-api-key", "x-forwarded-host", "x-forwarded-for", "x-custom-header"):
        assert name not in seen.headers, name
    assert "openai-organization" not in seen.headers
    assert "cookie" not in seen.headers
    values = " ".join(seen.headers.values())
    for value in (token, *client_headers.values()):
        assert value not in values, value


async def test_client_headers_on_messages_do_not_reach_upstream(world: World) -> None:
    token = world.keys["alice"]
    headers = {
        "x-api-key": token,
        "anthropic-version": ANTHROPIC_VERSION,
        "x-forwarded-host": "evil.example",
        "x-custom-header": "client-custom-value",
    }
    body = {"model": "claude", "max_tokens": 8, "messages": USER}
    reply = await call(world, MESSAGES, json=body, headers=headers)
    assert reply.status == 200, reply.body
    [seen] = world.mock.seen
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen.headers
    assert "x-forwarded-host" not in seen.headers
    assert "x-custom-header" not in seen.headers
    values = " ".join(seen.headers.values())
    assert token not in values and "evil.example" not in values


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(CHAT, {"model": "assistant", "messages": USER}, id="chat"),
        pytest.param(CHAT, {"model": "assistant", "messages": USER, "stream": True}, id="stream"),
        pytest.param(CHAT, {"model": "m-fail-400", "messages": USER}, id="upstream-400"),
        pytest.param(
            MESSAGES, {"model": "claude", "max_tokens": 8, "messages": USER}, id="messages"
        ),
    ],
)
async def test_upstream_identity_headers_do_not_reach_client(
    world: World, path: str, body: dict[str, Any]
) -> None:
    reply = await call(
        world,
        path,
        json=body,
        headers={"x-api-key": world.keys["alice"], "anthropic-version": ANTHROPIC_VERSION},
    )
    assert len(world.mock.seen) == 1  # the upstream did answer, with its leaky headers
    names = {name.lower() for name in reply.headers}
    assert "set-cookie" not in names
    assert "x-upstream-internal" not in names
    assert "openai-organization" not in names
    assert LEAK_HEADER not in names
    assert "mock-upstream" not in reply.headers.get("server", "")
    values = " ".join(reply.headers.values())
    assert LEAK_ORG not in values
    assert "upstream_session" not in values
