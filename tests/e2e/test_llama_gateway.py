"""A real third-party upstream behind the gateway: llama-cpp-python's OpenAI-compatible
server on a tiny random-weight model written by the test suite (nothing downloaded)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest

from garrison.bootstrap import init, open_directory
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi
from garrison.server import Gateway
from tests.support.llama_server import LlamaServer, serve_tiny_llama
from tests.support.tiny_gguf import HIDDEN_SIZE

pytestmark = [pytest.mark.e2e, pytest.mark.llama]

MAX_TOKENS = 12
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Hello there! How is the river today?"}
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    yield from serve_tiny_llama(tmp_path_factory)


@pytest.fixture
async def gateway_key(tmp_path: Path, llama: LlamaServer) -> AsyncIterator[tuple[str, str]]:
    done = init(tmp_path / "data")
    directory = open_directory(done.settings, actor="test")
    now = time.time()
    directory.create_principal(
        "dana", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.RESTRICTED, now=now
    )
    directory.create_model(
        "tiny",
        upstream_url=llama.base_url,
        upstream_model=llama.model_alias,
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.RESTRICTED,
        now=now,
    )
    key = directory.create_key("dana", now=now).key.token.reveal()
    directory.engine.dispose()
    settings = Settings(
        database_url=done.settings.database_url, key_dir=done.settings.key_dir, port=0
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield f"http://127.0.0.1:{gateway.port}/v1", key
    finally:
        await gateway.stop()


def _client(base: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)


async def test_chat_through_gateway_matches_direct_answer(
    gateway_key: tuple[str, str], llama: LlamaServer
) -> None:
    base, key = gateway_key
    async with _client(base, key) as client, _client(llama.base_url, "unused") as direct:
        via = await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
        )
        straight = await direct.chat.completions.create(
            model=llama.model_alias, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
        )
    assert via.model == "tiny"
    assert via.choices[0].message.content == straight.choices[0].message.content
    assert via.usage is not None and via.usage.completion_tokens == MAX_TOKENS


async def test_streaming_chat_through_gateway(gateway_key: tuple[str, str]) -> None:
    base, key = gateway_key
    async with _client(base, key) as client:
        whole = await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
        )
        stream = await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2
    assert text == whole.choices[0].message.content
    assert all(c.model == "tiny" for c in chunks)


async def test_completions_through_gateway(gateway_key: tuple[str, str]) -> None:
    base, key = gateway_key
    async with _client(base, key) as client:
        comp = await client.completions.create(
            model="tiny", prompt="The river", max_tokens=MAX_TOKENS, temperature=0
        )
    assert comp.choices[0].text


async def test_embeddings_through_gateway(gateway_key: tuple[str, str]) -> None:
    base, key = gateway_key
    async with _client(base, key) as client:
        emb = await client.embeddings.create(model="tiny", input=["river", "stone"])
    assert [len(d.embedding) for d in emb.data] == [HIDDEN_SIZE, HIDDEN_SIZE]


async def test_models_through_gateway_lists_registry_name(gateway_key: tuple[str, str]) -> None:
    base, key = gateway_key
    async with _client(base, key) as client:
        names = [m.id async for m in client.models.list()]
    assert names == ["tiny"]
