"""No model-name oracle: a model the caller may not use answers exactly like a model that
does not exist — status, body and headers — on every path and for every refusal reason.

Checks that could tell them apart (an over-long or unprintable justification, a body nested
too deep) run before the model is looked up, so they too answer the same for both. The one
deliberate difference, the hint naming a model's wire API, goes only to callers who may use
the model (see tests/e2e/test_routes.py).
An unknown model name is recorded in the audit log printable only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.gateway.caller_text import JUSTIFICATION_HEADER, JUSTIFICATION_MAX_CHARS
from garrison.gateway.json_depth import MAX_JSON_DEPTH
from garrison.store.changes import set_policy
from tests.gateway.test_policy_decisions import add_critical_model, require_justification
from tests.gateway.test_refusals import ANTHROPIC_VERSION, USER, Reply, call, comparable_headers
from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

MISSING = "no-such-model"


def _deep() -> Any:
    value: Any = 0
    for _ in range(MAX_JSON_DEPTH):
        value = [value]
    return value


def _openai(path: str, **fields: Any) -> Callable[[World, str, str], Awaitable[Reply]]:
    async def send(world: World, key: str, model: str) -> Reply:
        return await call(world, path, key=key, json={"model": model, **fields})

    return send


def _with_headers(
    path: str, headers: dict[str, str], **fields: Any
) -> Callable[[World, str, str], Awaitable[Reply]]:
    async def send(world: World, key: str, model: str) -> Reply:
        return await call(world, path, key=key, json={"model": model, **fields}, headers=headers)

    return send


async def _messages(world: World, key: str, model: str) -> Reply:
    body = {"model": model, "max_tokens": 8, "messages": USER}
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    return await call(world, "/v1/messages", json=body, headers=headers)


async def _retrieve(world: World, key: str, model: str) -> Reply:
    return await call(world, f"/v1/models/{model}", key=key, method="GET")


async def _retrieve_anthropic(world: World, key: str, model: str) -> Reply:
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    return await call(world, f"/v1/models/{model}", headers=headers, method="GET")


CHAT = "/v1/chat/completions"
# Every way of naming a model: the calls of both APIs, streaming, the model lookups, and the
# checks that refuse before the lookup.
PATHS: dict[str, Callable[[World, str, str], Awaitable[Reply]]] = {
    "chat": _openai(CHAT, messages=USER),
    "chat-stream": _openai(CHAT, messages=USER, stream=True),
    "completions": _openai("/v1/completions", prompt="hi"),
    "embeddings": _openai("/v1/embeddings", input="hi"),
    "messages": _messages,
    "retrieve": _retrieve,
    "retrieve-anthropic": _retrieve_anthropic,
    "long-justification": _with_headers(
        CHAT, {JUSTIFICATION_HEADER: "j" * (JUSTIFICATION_MAX_CHARS + 1)}, messages=USER
    ),
    "unprintable-justification": _with_headers(
        CHAT, {JUSTIFICATION_HEADER: "zero\u200bwidth"}, messages=USER
    ),
    "deep-body": _openai(CHAT, messages=USER, x=_deep()),
}
# A justification-only refusal is about calls: the model is listed (and retrievable, and
# named on the other API) for a caller who gives one.
CALL_PATHS = ("chat", "chat-stream", "completions", "embeddings")


def _model(world: World, name: str, api: UpstreamApi, level: Level, **more: Any) -> None:
    world.directory.create_model(
        name,
        upstream_model="mock-small",
        api=api,
        level=level,
        upstream_url=world.gateway.state.snapshot.models["assistant"].upstream_url,
        auth_style=AuthStyle.BEARER if api is UpstreamApi.OPENAI else AuthStyle.X_API_KEY,
        upstream_key=UPSTREAM_KEY,
        now=time.time(),
        **more,
    )


async def _restricted(world: World) -> None:
    _model(world, "restricted-model", UpstreamApi.OPENAI, Level.RESTRICTED)
    await world.reload()


async def _compartment(world: World) -> None:
    _model(world, "internal-cyber", UpstreamApi.OPENAI, Level.INTERNAL, compartments=["cyber"])
    await world.reload()


async def _forbid_carol(world: World) -> None:
    text = (
        '@id("no-carol") forbid (principal, action, resource) when { principal.name == "carol" };'
    )
    set_policy(world.directory, text, now=time.time(), proposed_by="test")
    await world.reload()


async def _restricted_claude(world: World) -> None:
    _model(world, "claude-restricted", UpstreamApi.ANTHROPIC, Level.RESTRICTED)
    await world.reload()


@dataclass(frozen=True)
class Case:
    who: str
    model: str
    setup: Callable[[World], Awaitable[None]]
    reason: str  # one of the reasons the refusal records
    paths: tuple[str, ...] = tuple(PATHS)


CASES = {
    "clearance-level": Case("carol", "restricted-model", _restricted, "clearance.level"),
    "compartment": Case("carol", "internal-cyber", _compartment, "clearance.compartment"),
    "vendor-ceiling": Case("bob", "restricted-model", _restricted, "vendor.ceiling"),
    "grant-required": Case("alice", "vault", add_critical_model, "grant.required"),
    "org-policy-forbid": Case("carol", "assistant", _forbid_carol, "policy.forbid"),
    "justification-required": Case(
        "carol", "assistant", require_justification, "justification.required", CALL_PATHS
    ),
    "other-api-beyond-clearance": Case(
        "bob", "claude-restricted", _restricted_claude, "vendor.ceiling"
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_a_model_the_caller_may_not_use_answers_like_a_missing_one(
    world: World, case: Case
) -> None:
    await case.setup(world)
    key = world.keys[case.who]
    for path in case.paths:
        send = PATHS[path]
        hidden = await send(world, key, case.model)
        missing = await send(world, key, MISSING)
        assert hidden.status in {400, 404}, (path, hidden.body)
        assert (path, hidden.status, hidden.body) == (path, missing.status, missing.body)
        assert comparable_headers(hidden) == comparable_headers(missing), path
    assert world.mock.seen == []
    await world.settle()
    # The record knows the difference the caller cannot see.
    reasons = [r for e in world.events("request.denied") for r in e["data"]["reasons"]]
    assert case.reason in reasons
    assert "model.unknown" in reasons


async def test_the_refusals_before_the_lookup_are_400s(world: World) -> None:
    for path in ("long-justification", "unprintable-justification", "deep-body"):
        reply = await PATHS[path](world, world.keys["alice"], "assistant")
        assert reply.status == 400, (path, reply.body)
        assert orjson.loads(reply.body)["error"]["code"] == "invalid_request"


async def _chat(world: World, key: str, model: str, *, stream: bool = False) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    session = aiohttp.ClientSession()
    try:
        resp = await session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps(body),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
    except BaseException:
        await session.close()
        raise
    return session, resp


# ── unknown model names kept printable only ────────────────────────────────────────────────
@pytest.mark.e2e
async def test_an_unknown_model_name_is_recorded_printable_only(world: World) -> None:
    name = "ghost\x1b[31m\r\nred\u2028\x9b\x00end" + "z" * 300
    session, resp = await _chat(world, world.keys["carol"], name)
    async with session, resp:
        assert resp.status == 404
        request_id = resp.headers["x-request-id"]
        assert b"\x1b" not in await resp.read()
    await world.settle()
    (event,) = [e for e in world.events("request.denied") if e["request_id"] == request_id]
    assert event["data"]["reasons"] == ["model.unknown"]
    recorded = event["model"]
    assert recorded.startswith("ghost?[31m??red???end")
    assert recorded.isprintable()
    assert len(recorded) == 200
    # Printable text passes through as it is.
    session, resp = await _chat(world, world.keys["carol"], "no-such-model é/ü v2")
    async with session, resp:
        assert resp.status == 404
        request_id = resp.headers["x-request-id"]
    await world.settle()
    (event,) = [e for e in world.events("request.denied") if e["request_id"] == request_id]
    assert event["model"] == "no-such-model é/ü v2"
