"""The real ``openai`` and ``anthropic`` clients against a running gateway (mock upstream)."""

from __future__ import annotations

import uuid

import anthropic
import openai
import pytest

from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e


def _openai(world: World, who: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{world.base}/v1", api_key=world.keys[who], max_retries=0)


def _anthropic(world: World, who: str = "alice") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=world.base, api_key=world.keys[who], max_retries=0)


async def test_openai_chat_non_streaming_reaches_upstream_with_client_facing_model(
    world: World,
) -> None:
    async with _openai(world) as client:
        reply = await client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hello there"}]
        )
    assert reply.model == "assistant"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 16
    seen = world.mock.seen[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert uuid.UUID(seen.request_id).version == 4


async def test_openai_chat_streaming_passes_chunks_and_hides_injected_usage(world: World) -> None:
    async with _openai(world) as client:
        stream = await client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 16
    assert all(c.usage is None for c in chunks)  # the client never asked for usage
    await world.settle()
    done = world.events("request.completed")[-1]
    assert done["data"]["tokens_out"] == 16
    assert done["data"]["tokens_in"] >= 1


async def test_openai_stream_with_include_usage_gets_usage_chunk(world: World) -> None:
    async with _openai(world) as client:
        stream = await client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


async def test_openai_completions_and_embeddings(world: World) -> None:
    async with _openai(world) as client:
        comp = await client.completions.create(model="assistant", prompt="once upon")
        emb = await client.embeddings.create(model="assistant", input=["a", "b"])
    assert comp.choices[0].text
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0


async def test_openai_models_list_shows_only_permitted_models(world: World) -> None:
    async with _openai(world, "bob") as client:
        names = {m.id async for m in client.models.list()}
    assert "assistant" in names
    assert "cyber-model" not in names


async def test_anthropic_messages_non_streaming(world: World) -> None:
    async with _anthropic(world) as client:
        msg = await client.messages.create(
            model="claude", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
        )
    assert msg.model == "claude"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert world.mock.seen[-1].headers["x-api-key"] == UPSTREAM_KEY


async def test_anthropic_messages_streaming(world: World) -> None:
    async with (
        _anthropic(world) as client,
        client.messages.stream(
            model="claude", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert len(text.split()) == 16
    assert final.usage.output_tokens == 16
    await world.settle()
    done = world.events("request.completed")[-1]
    assert done["data"]["tokens_out"] == 16


async def test_openai_client_gets_404_for_model_beyond_clearance(world: World) -> None:
    async with _openai(world, "bob") as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="cyber-model", messages=[{"role": "user", "content": "hi"}]
            )
    assert world.mock.seen == []


async def test_anthropic_client_gets_authentication_error_for_bad_key(world: World) -> None:
    client = anthropic.AsyncAnthropic(base_url=world.base, api_key="gk_nope", max_retries=0)
    async with client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(
                model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
    assert world.mock.seen == []
