"""Routes through the real ``openai`` and ``anthropic`` clients: unsupported routes say so,
``GET /v1/models/{id}`` shows only visible models, and a model called through the wire API it
does not speak is named as such — only to a caller who may use it."""

from __future__ import annotations

import time

import anthropic
import openai
import orjson
import pytest

from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.domain.locks import LockKind
from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]


def _openai(world: World, who: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{world.base}/v1", api_key=world.keys[who], max_retries=0)


def _anthropic(world: World, who: str = "alice") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=world.base, api_key=world.keys[who], max_retries=0)


async def add_restricted_claude(world: World) -> None:
    """An Anthropic model alice may use and bob (a contractor) may not."""
    world.directory.create_model(
        "claude-restricted",
        upstream_model="mock-small",
        api=UpstreamApi.ANTHROPIC,
        level=Level.RESTRICTED,
        upstream_url=world.gateway.state.snapshot.models["claude"].upstream_url,
        auth_style=AuthStyle.X_API_KEY,
        upstream_key=UPSTREAM_KEY,
        now=time.time(),
    )
    await world.reload()


# ── unsupported routes ─────────────────────────────────────────────────────────────────────
async def test_the_responses_api_is_an_unsupported_route(world: World) -> None:
    async with _openai(world) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model="assistant", input="hi")
    assert caught.value.code == "unsupported_route"
    assert "not supported" in caught.value.message
    assert world.mock.seen == []


async def test_count_tokens_is_an_unsupported_route(world: World) -> None:
    async with _anthropic(world) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.count_tokens(model="claude", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 404
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "not_found_error"
    assert "not supported" in body["error"]["message"]
    assert world.mock.seen == []


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/anything/else", "/v2/chat/completions"])
async def test_any_unknown_path_is_unsupported_route_not_model_not_found(
    world: World, path: str
) -> None:
    async with _openai(world) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.post(path, body={"model": "assistant"}, cast_to=object)
    assert caught.value.code == "unsupported_route"


# ── one model ──────────────────────────────────────────────────────────────────────────────
async def test_openai_client_retrieves_a_visible_model(world: World) -> None:
    async with _openai(world, "bob") as client:
        model = await client.models.retrieve("assistant")
    assert (model.id, model.object, model.owned_by) == ("assistant", "model", "garrison")
    await world.settle()
    done = world.events("request.completed")[-1]
    assert (done["model"], done["data"]["status"]) == ("assistant", 200)


async def test_anthropic_client_retrieves_a_visible_model(world: World) -> None:
    async with _anthropic(world, "bob") as client:
        model = await client.models.retrieve("claude")
    assert (model.id, model.type) == ("claude", "model")


async def test_retrieving_an_invisible_or_missing_model_gives_the_same_404(world: World) -> None:
    answers = []
    for name in ("cyber-model", "no-such-model"):
        async with _openai(world, "bob") as client:
            with pytest.raises(openai.NotFoundError) as caught:
                await client.models.retrieve(name)
        answers.append((caught.value.status_code, caught.value.body))
    assert answers[0] == answers[1]
    assert answers[0][1]["code"] == "model_not_found"  # type: ignore[index]
    await world.settle()
    denied = world.events("request.denied")
    assert [e["data"]["reasons"] for e in denied] == [
        ["clearance.level", "clearance.compartment", "vendor.ceiling"],
        ["model.unknown"],
    ]


# ── the other wire API ─────────────────────────────────────────────────────────────────────
async def test_an_anthropic_model_on_the_openai_api_names_its_api_to_a_permitted_caller(
    world: World,
) -> None:
    async with _openai(world) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="claude", messages=HI)  # type: ignore[arg-type]
    assert caught.value.code == "model_wrong_api"
    assert "Anthropic Messages API (/v1/messages)" in caught.value.message
    assert world.mock.seen == []
    await world.settle()
    (denied,) = world.events("request.denied")
    assert denied["data"]["reasons"] == ["model.wrong_api"]


async def test_an_openai_model_on_the_messages_api_names_its_api_to_a_permitted_caller(
    world: World,
) -> None:
    async with _anthropic(world) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.create(model="assistant", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    assert "OpenAI API" in caught.value.message
    assert world.mock.seen == []


async def test_a_forbidden_model_on_the_other_api_is_a_plain_404(world: World) -> None:
    await add_restricted_claude(world)
    answers = []
    for name in ("claude-restricted", "no-such-model"):
        async with _openai(world, "bob") as client:
            with pytest.raises(openai.NotFoundError) as caught:
                await client.chat.completions.create(model=name, messages=HI)  # type: ignore[arg-type]
        answers.append((caught.value.code, caught.value.message, orjson.dumps(caught.value.body)))
    assert answers[0] == answers[1]
    assert answers[0][0] == "model_not_found"
    await world.settle()
    reasons = [e["data"]["reasons"] for e in world.events("request.denied")]
    assert reasons == [["clearance.level", "vendor.ceiling"], ["model.unknown"]]


async def test_a_locked_model_is_retrieved_like_a_missing_one_as_it_leaves_the_list(
    world: World,
) -> None:
    world.directory.create_lock(LockKind.MODEL, "assistant", reason="test", now=time.time())
    await world.reload()
    answers = []
    async with _openai(world, "bob") as client:
        assert "assistant" not in {m.id async for m in client.models.list()}
        for name in ("assistant", "no-such-model"):
            with pytest.raises(openai.NotFoundError) as caught:
                await client.models.retrieve(name)
            answers.append((caught.value.code, caught.value.message))
    assert answers[0] == answers[1]
