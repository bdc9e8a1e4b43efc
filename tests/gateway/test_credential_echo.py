"""The upstream echoes the credential the gateway sent: no form of it reaches the caller or
the log. Unit tests of the forms, then an upstream on loopback that echoes short keys and
base64 keys with ``/+=`` in errors, answers and streams."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import orjson
import pytest
from aiohttp import web

from garrison.gateway.credential_echo import (
    MAX_KEY_CHARS,
    MIN_B64_FRAGMENT_CHARS,
    REDACTED,
    answer_forms,
    credential_forms,
    scrub_bytes,
    scrub_text,
)
from tests.support.admin import admin_call
from tests.support.callers import service_key
from tests.support.world import World

SHORT_KEY = "k/+=9Q"
B64_KEY = "Zm9v/YmFy+cXV4=="
LONG_KEY = "sk-proj-AbCdEf0123456789/+=ghIJkl"
QUOTE_KEY = 'ab"c\\d/ef12'
KEYS = [SHORT_KEY, B64_KEY, LONG_KEY, QUOTE_KEY]


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def b64url(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode()


# Ways an upstream can echo the key (each always removed, whatever the key's length).
ECHOES: dict[str, Callable[[str], str]] = {
    "raw": lambda k: k,
    "bearer": lambda k: f"Bearer {k}",
    "url": lambda k: quote(k, safe=""),
    "url-plus": quote_plus,
    "json-solidus": lambda k: k.replace("/", "\\/"),
    "b64": b64,
    "b64url": b64url,
    "b64-bearer": lambda k: b64(f"Bearer {k}"),
    "b64url-bearer": lambda k: b64url(f"Bearer {k}"),
}
# Unaligned base64 (the key in the middle of an encoded blob): removed when the key is long
# enough to leave a fragment of MIN_B64_FRAGMENT_CHARS.
UNALIGNED: dict[str, Callable[[str], str]] = {
    "b64-offset-1": lambda k: b64("x" + k),
    "b64-offset-2": lambda k: b64("xy" + k),
    "b64-header-dump": lambda k: b64(f"Authorization: Bearer {k}\r\nHost: up"),
}


def key_survives(text: str, key: str, echo: str) -> bool:
    return echo in text or key in text


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("how", sorted(ECHOES))
def test_every_echoed_form_is_removed_from_text(key: str, how: str) -> None:
    echo = ECHOES[how](key)
    out = scrub_text(f"upstream said: {echo} (end)", key)
    assert not key_survives(out, key, echo)
    assert REDACTED in out


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("how", sorted(ECHOES))
def test_every_echoed_form_is_removed_from_answer_bytes(key: str, how: str) -> None:
    echo = ECHOES[how](key)
    out = scrub_bytes(f'{{"content": "{echo}"}}'.encode(), answer_forms(key)).decode()
    assert not key_survives(out, key, echo)


@pytest.mark.parametrize("key", [B64_KEY, LONG_KEY, QUOTE_KEY])
@pytest.mark.parametrize("how", sorted(UNALIGNED))
def test_unaligned_base64_of_a_longer_key_is_removed(key: str, how: str) -> None:
    echo = UNALIGNED[how](key)
    out = scrub_text(f"debug: {echo}", key)
    assert echo not in out and REDACTED in out


def test_short_base64_fragments_are_not_forms() -> None:
    # A short key at an unaligned offset leaves 4-character fragments: too common to remove.
    assert all(
        len(f) >= min(MIN_B64_FRAGMENT_CHARS, len(SHORT_KEY)) for f in credential_forms(SHORT_KEY)
    )


def test_forms_are_longest_first() -> None:
    lengths = [len(f) for f in credential_forms(LONG_KEY)]
    assert lengths == sorted(lengths, reverse=True)


def test_a_key_over_the_limit_is_removed_only_raw() -> None:
    key = "a" * (MAX_KEY_CHARS + 1)
    assert credential_forms(key) == (key,)


def test_no_key_removes_nothing() -> None:
    assert scrub_text("Bearer abc", None) == "Bearer abc"
    assert scrub_bytes(b"abc", ()) == b"abc"


def test_text_without_the_key_is_unchanged() -> None:
    text = "This model's maximum context length is 4096 tokens."
    assert scrub_text(text, LONG_KEY) == text


# ── end to end: an upstream that echoes what it was sent ───────────────────────────────────


def echo_blob(key: str) -> str:
    forms = [f(key) for f in ECHOES.values()] + [f(key) for f in UNALIGNED.values()]
    return " | ".join(forms)


def presented(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth else request.headers.get("x-api-key", "")


async def echo_handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    key = presented(request)
    blob = echo_blob(key)
    mode = body["model"]
    anthropic = request.path.endswith("/messages")
    if mode == "echo-error":
        message = f"Invalid API key {key}; you sent: {blob}; see http://10.0.0.9/debug"
    elif mode == "echo-context":
        message = f"This model's maximum context length is 4096 tokens ({blob})"
    else:
        message = ""
    if message:
        error = (
            {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
            if anthropic
            else {"error": {"message": message, "type": "invalid_request_error", "code": key}}
        )
        return web.json_response(error, status=400)
    if body.get("stream"):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for part in (key, blob):
            chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": part}}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp
    if anthropic:
        return web.json_response(
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": f"{key} {blob}"}],
                "usage": {"input_tokens": 1, "output_tokens": 2},
            }
        )
    return web.json_response(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{key} {blob}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        }
    )


@contextlib.asynccontextmanager
async def echo_upstream() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo_handler)
    app.router.add_post("/v1/messages", echo_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def register(world: World, port: int, key: str, api: str, mode: str) -> str:
    name = f"{api}-{mode}"
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/models",
        {
            "name": name,
            "upstream_url": f"http://127.0.0.1:{port}/v1",
            "upstream_model": mode,
            "api": api,
            "upstream_key": key,
        },
    )
    assert status == 201, body
    return name


async def call(
    world: World, key: str, api: str, name: str, *, stream: bool = False
) -> tuple[int, bytes]:
    messages = [{"role": "user", "content": "hi"}]
    if api == "anthropic":
        path, headers = "/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}
        body: dict[str, Any] = {"model": name, "messages": messages, "max_tokens": 8}
    else:
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {key}"}
        body = {"model": name, "messages": messages}
    if stream:
        body["stream"] = True
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + path, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


def assert_no_form(raw: bytes, key: str) -> None:
    text = raw.decode()
    for how, echo in ECHOES.items():
        assert echo(key) not in text, how
    if len(key) > len(SHORT_KEY):
        for how, echo in UNALIGNED.items():
            assert echo(key) not in text, how


@pytest.mark.e2e
@pytest.mark.parametrize("key", [SHORT_KEY, B64_KEY], ids=["short", "base64"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_echoed_credential_never_reaches_the_caller_or_the_log(
    world: World, caplog: pytest.LogCaptureFixture, key: str, api: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with echo_upstream() as port:
        names = {
            m: await register(world, port, key, api, m)
            for m in ("echo-error", "echo-context", "echo-answer")
        }
        await world.reload()
        caller = await service_key(world)
        status, raw = await call(world, caller, api, names["echo-error"])
        assert status == 400
        assert_no_form(raw, key)
        assert b"10.0.0.9" not in raw and b"Invalid API key" not in raw  # not a known shape
        status, raw = await call(world, caller, api, names["echo-context"])
        assert status == 400
        assert_no_form(raw, key)
        assert b"maximum context length is 4096 tokens" in raw  # the known shape, rebuilt
        status, raw = await call(world, caller, api, names["echo-answer"])
        assert status == 200
        assert_no_form(raw, key)
        assert REDACTED.encode() in raw
        if api == "openai":
            status, raw = await call(world, caller, api, names["echo-answer"], stream=True)
            assert status == 200
            assert_no_form(raw, key)
        await world.settle()
    assert key not in caplog.text
    assert key.encode() not in world.raw_audit()
    shapes = [e["data"].get("upstream_message") for e in world.events("request.completed")]
    assert {"generic", "openai_context"} <= set(shapes)


def test_a_key_at_the_limit_gets_every_form() -> None:
    key = "a/" * (MAX_KEY_CHARS // 2)
    assert len(credential_forms(key)) > 1
