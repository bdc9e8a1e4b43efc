"""llama-cpp-python's real OpenAI-compatible server, driven directly (no gateway).

These tests prove that the tiny offline model and the ``LlamaServer`` harness work, so
that gateway tests can put the same upstream behind Garrison.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.support import tiny_gguf
from tests.support.llama_server import LlamaServer, serve_tiny_llama

pytestmark = [pytest.mark.e2e, pytest.mark.llama]

MAX_TOKENS = 12
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a tiny test model."},
    {"role": "user", "content": "Hello there! How is the river today?"},
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    yield from serve_tiny_llama(tmp_path_factory)


@pytest.fixture(scope="module")
def client(llama: LlamaServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=llama.base_url, api_key="unused", max_retries=0, timeout=30.0
    ) as client:
        yield client


@pytest.fixture
async def async_client(llama: LlamaServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=llama.base_url, api_key="unused", max_retries=0, timeout=30.0
    ) as client:
        yield client


def _chat(client: openai.OpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS
    )


def test_server_is_on_loopback(llama: LlamaServer) -> None:
    assert llama.base_url == f"http://127.0.0.1:{llama.port}/v1"
    assert llama.is_running()
    assert llama.model_path.stat().st_size > 0


def test_models_list(client: openai.OpenAI, llama: LlamaServer) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == [llama.model_alias]


def test_chat_non_streaming_is_deterministic(client: openai.OpenAI, llama: LlamaServer) -> None:
    first = _chat(client, llama.model_alias)
    second = _chat(client, "any-model-name-is-accepted")

    text = first.choices[0].message.content
    assert isinstance(text, str)
    assert text.strip()
    assert second.choices[0].message.content == text
    assert first.choices[0].message.role == "assistant"
    # Special tokens are suppressed in the weights, so generation always runs to max_tokens.
    assert first.choices[0].finish_reason == "length"
    assert first.usage is not None
    assert first.usage.completion_tokens == MAX_TOKENS
    assert first.usage.prompt_tokens > 0


def test_chat_streaming(client: openai.OpenAI, llama: LlamaServer) -> None:
    stream = client.chat.completions.create(
        model=llama.model_alias,
        messages=MESSAGES,
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    pieces: list[str] = []
    finish_reasons: list[str] = []
    n_chunks = 0
    with stream:
        for chunk in stream:
            n_chunks += 1
            assert chunk.object == "chat.completion.chunk"
            assert chunk.usage is None  # llama-cpp-python never sends a usage chunk
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason is not None:
                    finish_reasons.append(choice.finish_reason)

    assert n_chunks >= 3
    assert len(pieces) >= 3
    text = "".join(pieces)
    assert text.strip()
    assert finish_reasons == ["length"]
    # Greedy decoding: the stream spells out exactly the non-streaming answer.
    assert text == _chat(client, llama.model_alias).choices[0].message.content


async def test_chat_streaming_async(async_client: openai.AsyncOpenAI, llama: LlamaServer) -> None:
    stream = await async_client.chat.completions.create(
        model=llama.model_alias,
        messages=MESSAGES,
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    pieces: list[str] = []
    async with stream:
        async for chunk in stream:
            pieces.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert len(pieces) >= 3
    assert "".join(pieces).strip()


def test_completions(client: openai.OpenAI, llama: LlamaServer) -> None:
    def complete() -> openai.types.Completion:
        return client.completions.create(
            model=llama.model_alias, prompt="The river ran", temperature=0, max_tokens=MAX_TOKENS
        )

    first = complete()
    text = first.choices[0].text
    assert isinstance(text, str)
    assert text.strip()
    assert complete().choices[0].text == text
    assert first.choices[0].finish_reason == "length"
    assert first.usage is not None
    assert first.usage.completion_tokens == MAX_TOKENS


def test_completions_streaming(client: openai.OpenAI, llama: LlamaServer) -> None:
    stream = client.completions.create(
        model=llama.model_alias,
        prompt="The river ran",
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    with stream:
        pieces = [choice.text for chunk in stream for choice in chunk.choices if choice.text]
    assert len(pieces) >= 3
    assert "".join(pieces).strip()


def test_embeddings(client: openai.OpenAI, llama: LlamaServer) -> None:
    result = client.embeddings.create(
        model=llama.model_alias, input=["hello world", "bake the bread"]
    )
    assert [item.index for item in result.data] == [0, 1]
    for item in result.data:
        assert len(item.embedding) == tiny_gguf.HIDDEN_SIZE
        assert all(isinstance(value, float) for value in item.embedding)
    assert result.data[0].embedding != result.data[1].embedding
    single = client.embeddings.create(model=llama.model_alias, input="hello world")
    assert single.data[0].embedding == pytest.approx(result.data[0].embedding, rel=1e-4, abs=1e-6)


def test_chat_still_works_after_embeddings(client: openai.OpenAI, llama: LlamaServer) -> None:
    before = _chat(client, llama.model_alias).choices[0].message.content
    client.embeddings.create(model=llama.model_alias, input="interleave")
    assert _chat(client, llama.model_alias).choices[0].message.content == before
