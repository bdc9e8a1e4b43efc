"""Tests for the mock upstream, driven by the real ``openai`` and ``anthropic`` clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import aiohttp.web
import anthropic
import openai
import orjson
import pytest

from garrison.mock import (
    LEAK_HEADER,
    LEAK_HOST,
    LEAK_ORG,
    LEAK_TRACE,
    MODEL_IDS,
    MockConfig,
    MockUpstream,
)

TOKENS = 5
# Typed loosely: the same message list goes to both SDKs, whose param types differ.
USER: Any = [{"role": "user", "content": "tell me a story"}]


async def wait_until(predicate: Callable[[], bool], timeout: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    mock = MockUpstream(MockConfig(tokens=TOKENS))
    await mock.start()
    yield mock
    await mock.stop()


@pytest.fixture
async def oai(upstream: MockUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{upstream.base_url}/v1", api_key="x", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def claude(upstream: MockUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=upstream.base_url, api_key="x", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def chat_text(client: openai.AsyncOpenAI, content: str, model: str = "m") -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}]
    )
    return reply.choices[0].message.content or ""


# --- lifecycle ---------------------------------------------------------------------------


async def test_start_returns_the_bound_port() -> None:
    mock = MockUpstream()
    port = await mock.start()
    try:
        assert port > 0
        assert mock.base_url == f"http://127.0.0.1:{port}"
    finally:
        await mock.stop()


async def test_stop_disconnects_a_hung_request_promptly(http: aiohttp.ClientSession) -> None:
    mock = MockUpstream()
    port = await mock.start()
    body = {"model": "hang", "messages": USER}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    pending = asyncio.create_task(http.post(url, json=body, headers={"x-request-id": "h-stop"}))
    try:
        assert await wait_until(lambda: "h-stop" in mock.seen_request_ids)
        started = time.monotonic()
        await mock.stop()
        assert time.monotonic() - started < 0.4
    finally:
        await mock.stop()
        (outcome,) = await asyncio.gather(pending, return_exceptions=True)
    assert isinstance(outcome, aiohttp.ClientError)
    assert mock.cancelled_request_ids == ["h-stop"]


# --- OpenAI endpoints --------------------------------------------------------------------


async def test_models_lists_fixed_ids(oai: openai.AsyncOpenAI) -> None:
    page = await oai.models.list()
    assert [m.id for m in page.data] == list(MODEL_IDS)
    assert all(m.owned_by == "mock" and m.object == "model" for m in page.data)


async def test_chat_completion_has_configured_tokens_and_usage(oai: openai.AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(
        model="mock-small",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "tell me a story"},
        ],
    )
    assert reply.object == "chat.completion"
    assert reply.model == "mock-small"
    assert reply.choices[0].finish_reason == "stop"
    assert len((reply.choices[0].message.content or "").split()) == TOKENS
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, TOKENS)
    assert reply.usage.total_tokens == 6 + TOKENS


async def test_chat_prompt_tokens_count_text_content_parts(oai: openai.AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3


async def test_chat_prompt_tokens_are_at_least_one(oai: openai.AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(model="m", messages=[{"role": "user", "content": ""}])
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 1


async def test_equal_requests_give_equal_answers(oai: openai.AsyncOpenAI) -> None:
    assert await chat_text(oai, "same prompt") == await chat_text(oai, "same prompt")


async def test_different_prompts_give_different_answers(oai: openai.AsyncOpenAI) -> None:
    assert await chat_text(oai, "first prompt") != await chat_text(oai, "second prompt")


async def test_answer_is_a_fixed_function_of_the_prompt(oai: openai.AsyncOpenAI) -> None:
    # A golden value: catches per-process randomness such as Python's salted hash().
    assert await chat_text(oai, "hi there") == "papa tango xray basalt alpha"


async def test_answer_depends_only_on_last_user_message(oai: openai.AsyncOpenAI) -> None:
    plain = await chat_text(oai, "the question")
    reply = await oai.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "other system prompt"},
            {"role": "user", "content": "an earlier question"},
            {"role": "assistant", "content": "an earlier answer"},
            {"role": "user", "content": "the question"},
        ],
    )
    assert reply.choices[0].message.content == plain


async def test_chat_stream_matches_non_stream_text(oai: openai.AsyncOpenAI) -> None:
    expected = await chat_text(oai, "stream me")
    stream = await oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    async with stream:
        chunks = [chunk async for chunk in stream]
    token_chunks = chunks[:-1]
    assert len(token_chunks) == TOKENS
    assert token_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in token_chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in token_chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_chat_stream_without_include_usage_has_no_usage_chunk(
    oai: openai.AsyncOpenAI,
) -> None:
    stream = await oai.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)


async def test_chat_stream_include_usage_ends_with_usage_chunk(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="m", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    async with stream:
        chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, TOKENS)
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_chat_stream_wire_format_is_data_events_ending_in_done(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "messages": USER, "stream": True}
    async with http.post(f"{upstream.base_url}/v1/chat/completions", json=body) as response:
        assert response.content_type == "text/event-stream"
        raw = (await response.read()).decode()
    assert raw.endswith("\n\n")
    events = raw[: -len("\n\n")].split("\n\n")
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert len(events) == TOKENS + 2  # tokens, stop chunk, [DONE]
    first = orjson.loads(events[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk"


async def test_completions_give_one_choice_per_prompt(oai: openai.AsyncOpenAI) -> None:
    reply = await oai.completions.create(model="m", prompt=["first one", "second"])
    assert reply.object == "text_completion"
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(len(c.text.split()) == TOKENS for c in reply.choices)
    assert reply.choices[0].text != reply.choices[1].text
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 2 * TOKENS)


async def test_completions_stream_matches_non_stream(oai: openai.AsyncOpenAI) -> None:
    expected = (await oai.completions.create(model="m", prompt="once upon")).choices[0].text
    stream = await oai.completions.create(
        model="m", prompt="once upon", stream=True, stream_options={"include_usage": True}
    )
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == TOKENS


async def test_embeddings_are_deterministic_vectors_of_dimension_8(
    oai: openai.AsyncOpenAI,
) -> None:
    first = await oai.embeddings.create(model="m", input=["a", "b"], encoding_format="float")
    again = await oai.embeddings.create(model="m", input="a", encoding_format="float")
    vectors = [d.embedding for d in first.data]
    assert [len(v) for v in vectors] == [8, 8]
    assert vectors[0] != vectors[1]
    assert again.data[0].embedding == vectors[0]


async def test_embeddings_base64_decodes_to_the_float_vectors(oai: openai.AsyncOpenAI) -> None:
    # The openai client asks for base64 unless told otherwise.
    floats = await oai.embeddings.create(model="m", input="x y", encoding_format="float")
    default = await oai.embeddings.create(model="m", input="x y")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)


async def test_embeddings_usage_counts_input_words(oai: openai.AsyncOpenAI) -> None:
    reply = await oai.embeddings.create(model="m", input=["one two", "three"])
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (3, 3)


async def test_invalid_json_gets_openai_400(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = f"{upstream.base_url}/v1/chat/completions"
    async with http.post(url, data=b"{not json", headers={"content-type": "application/json"}) as r:
        assert r.status == 400
        body = orjson.loads(await r.read())
    assert body["error"]["type"] == "invalid_request_error"


async def test_missing_messages_gets_400(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="m", messages=[])
    assert info.value.param == "messages"


async def test_large_bodies_are_accepted(oai: openai.AsyncOpenAI) -> None:
    big = "word " * 400_000  # ~2 MB, past aiohttp's 1 MiB default limit
    reply = await oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": big}]
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 400_000


# --- Anthropic ---------------------------------------------------------------------------


async def test_messages_non_stream_shape(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="claude-mock", max_tokens=100, system="be brief", messages=USER
    )
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", "claude-mock")
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.content[0].type == "text"
    assert len(message.content[0].text.split()) == TOKENS
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, TOKENS)


async def test_messages_answer_matches_chat_answer_for_same_prompt(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    message = await claude.messages.create(model="m", max_tokens=100, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == await chat_text(oai, "tell me a story")


async def test_messages_stream_event_sequence(claude: anthropic.AsyncAnthropic) -> None:
    stream = await claude.messages.create(model="m", max_tokens=100, messages=USER, stream=True)
    async with stream:
        events = [event async for event in stream]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * TOKENS,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert (start.message.usage.input_tokens, start.message.usage.output_tokens) == (4, 1)
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == TOKENS


async def test_messages_stream_helper_rebuilds_the_non_stream_message(
    claude: anthropic.AsyncAnthropic,
) -> None:
    plain = await claude.messages.create(model="m", max_tokens=100, messages=USER)
    async with claude.messages.stream(model="m", max_tokens=100, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and plain.content[0].type == "text"
    assert final.content[0].text == plain.content[0].text
    assert final.usage.output_tokens == TOKENS


async def test_messages_stream_wire_format_has_event_lines(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": USER, "stream": True}
    async with http.post(f"{upstream.base_url}/v1/messages", json=body) as response:
        raw = (await response.read()).decode()
    events = raw.strip().split("\n\n")
    for event in events:
        name_line, data_line = event.split("\n")
        name = name_line.removeprefix("event: ")
        assert orjson.loads(data_line.removeprefix("data: "))["type"] == name


# --- failure modes -----------------------------------------------------------------------


async def test_fail_400_openai_leaks_upstream_details(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="fail-400", messages=USER)
    error = info.value
    assert error.code == "context_length_exceeded"
    assert error.type == "invalid_request_error"
    assert LEAK_HOST in error.message and LEAK_ORG in error.message
    assert error.response.headers[LEAK_HEADER] == "leak"


async def test_fail_400_anthropic_uses_anthropic_error_shape(
    claude: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(model="fail-400", max_tokens=10, messages=USER)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert LEAK_HOST in body["error"]["message"]
    assert info.value.response.headers[LEAK_HEADER] == "leak"


async def test_fail_500_body_contains_internal_trace(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        await oai.chat.completions.create(model="fail-500", messages=USER)
    assert LEAK_TRACE in info.value.message
    assert info.value.response.status_code == 500


async def test_fail_500_anthropic_is_api_error(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        await claude.messages.create(model="fail-500", max_tokens=10, messages=USER)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "api_error"
    assert LEAK_TRACE in body["error"]["message"]


async def test_hang_disconnect_is_recorded_as_cancelled(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "hang", "messages": USER}
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{upstream.base_url}/v1/chat/completions",
            json=body,
            headers={"x-request-id": "hang-1"},
            timeout=aiohttp.ClientTimeout(total=0.2),
        ) as response:
            await response.read()
    assert await wait_until(lambda: "hang-1" in upstream.cancelled_request_ids)


async def test_slow_stream_cut_mid_stream_is_recorded_as_cancelled(
    upstream: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    stream = await oai.chat.completions.create(
        model="slow-stream",
        messages=USER,
        stream=True,
        extra_headers={"x-request-id": "slow-1"},
    )
    received = 0
    async with stream:
        async for _chunk in stream:
            received += 1
            if received == 3:
                assert upstream.cancelled_request_ids == []  # still streaming: cut it now
                break
    assert await wait_until(lambda: "slow-1" in upstream.cancelled_request_ids)


async def test_fast_stream_cut_by_client_is_recorded_as_cancelled(
    http: aiohttp.ClientSession,
) -> None:
    # No chunk delay: the disconnect reaches the handler while it writes, not while it sleeps.
    async with MockUpstream(MockConfig(tokens=100_000)) as mock:
        body = {"model": "m", "messages": USER, "stream": True}
        headers = {"x-request-id": "fast-1"}
        async with http.post(
            f"{mock.base_url}/v1/chat/completions", json=body, headers=headers
        ) as r:
            await r.content.readuntil(b"\n\n")
            r.close()
        assert await wait_until(lambda: mock.cancelled_request_ids == ["fast-1"])


async def test_cut_stream_is_recorded_even_without_handler_cancellation(
    http: aiohttp.ClientSession,
) -> None:
    # Hosting app() on a runner of one's own: the disconnect only shows up as a failed write.
    mock = MockUpstream()
    runner = aiohttp.web.AppRunner(mock.app(), handler_cancellation=False, shutdown_timeout=0.1)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        body = {"model": "slow-stream", "messages": USER, "stream": True}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with http.post(url, json=body, headers={"x-request-id": "own-1"}) as r:
            await r.content.readuntil(b"\n\n")
            r.close()
        assert await wait_until(lambda: mock.cancelled_request_ids == ["own-1"])
    finally:
        await runner.cleanup()


async def test_completed_requests_are_not_recorded_as_cancelled(
    upstream: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    stream = await oai.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        _ = [chunk async for chunk in stream]
    await chat_text(oai, "plain")
    await asyncio.sleep(0.05)
    assert upstream.cancelled_request_ids == []


async def test_drop_truncates_the_body(upstream: MockUpstream, http: aiohttp.ClientSession) -> None:
    body = {"model": "drop", "messages": USER}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{upstream.base_url}/v1/chat/completions", json=body) as r:
            await r.read()


async def test_drop_truncates_a_stream(upstream: MockUpstream, http: aiohttp.ClientSession) -> None:
    body = {"model": "drop", "messages": USER, "stream": True}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{upstream.base_url}/v1/chat/completions", json=body) as r:
            await r.read()


async def test_drop_surfaces_as_connection_error_in_openai_client(
    oai: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="drop", messages=USER)


async def test_drop_is_not_recorded_as_cancelled(
    upstream: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(
            model="drop", messages=USER, extra_headers={"x-request-id": "drop-1"}
        )
    await asyncio.sleep(0.05)
    assert "drop-1" in upstream.seen_request_ids
    assert upstream.cancelled_request_ids == []


# --- leaky headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "model"), [("/v1/models", None), ("/v1/chat/completions", "fail-500")]
)
async def test_responses_carry_headers_a_real_upstream_leaks(
    upstream: MockUpstream, http: aiohttp.ClientSession, path: str, model: str | None
) -> None:
    url = upstream.base_url + path
    if model is None:
        request = http.get(url)
    else:
        request = http.post(url, json={"model": model, "messages": USER})
    async with request as response:
        headers = response.headers
    assert headers["server"] == "mock-upstream/1.0"
    assert headers["set-cookie"] == "upstream_session=abc"
    assert headers["x-upstream-internal"] == "1"
    assert headers["openai-organization"] == LEAK_ORG


# --- recording ---------------------------------------------------------------------------


async def test_request_ids_are_recorded_in_order_including_failures(
    upstream: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    await oai.chat.completions.create(model="m", messages=USER, extra_headers={"x-request-id": "a"})
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(
            model="fail-500", messages=USER, extra_headers={"x-request-id": "b"}
        )
    await oai.models.list(extra_headers={"x-request-id": "c"})
    assert upstream.seen_request_ids == ["a", "b", "c"]


async def test_seen_records_path_lowercase_headers_and_body(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    payload = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    headers = {"X-Request-Id": "rid-9", "X-Custom": "Value", "Content-Type": "application/json"}
    async with http.post(
        f"{upstream.base_url}/v1/chat/completions", data=payload, headers=headers
    ) as r:
        assert r.status == 200
    (seen,) = upstream.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.request_id == "rid-9"
    assert seen.headers["x-custom"] == "Value"
    assert "X-Custom" not in seen.headers
    assert seen.body == payload


async def test_request_without_id_is_recorded_as_empty_string(
    upstream: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    await oai.models.list()
    assert upstream.seen_request_ids == [""]
    assert upstream.seen[0].request_id == ""


async def test_reset_forgets_everything(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "hang", "messages": USER}
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{upstream.base_url}/v1/chat/completions",
            json=body,
            headers={"x-request-id": "r-1"},
            timeout=aiohttp.ClientTimeout(total=0.1),
        ) as response:
            await response.read()
    assert await wait_until(lambda: bool(upstream.cancelled_request_ids))
    upstream.reset()
    assert (upstream.seen, upstream.seen_request_ids, upstream.cancelled_request_ids) == (
        [],
        [],
        [],
    )


async def test_control_endpoints_report_and_reset_without_being_recorded(
    upstream: MockUpstream, http: aiohttp.ClientSession, oai: openai.AsyncOpenAI
) -> None:
    await oai.models.list(extra_headers={"x-request-id": "ctl-1"})
    async with http.get(f"{upstream.base_url}/_mock/seen") as r:
        assert orjson.loads(await r.read()) == {"request_ids": ["ctl-1"], "cancelled": []}
    async with http.post(f"{upstream.base_url}/_mock/reset") as r:
        assert r.status == 200
    async with http.get(f"{upstream.base_url}/_mock/seen") as r:
        assert orjson.loads(await r.read()) == {"request_ids": [], "cancelled": []}
    assert upstream.seen == []


# --- API key -----------------------------------------------------------------------------


@pytest.fixture
async def keyed() -> AsyncIterator[MockUpstream]:
    mock = MockUpstream(MockConfig(tokens=TOKENS, expected_api_key="sk-right"))
    await mock.start()
    yield mock
    await mock.stop()


async def test_wrong_bearer_key_gets_openai_401(keyed: MockUpstream) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{keyed.base_url}/v1", api_key="sk-wrong", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert info.value.code == "invalid_api_key"
    assert info.value.type == "invalid_request_error"


async def test_wrong_x_api_key_gets_anthropic_401(keyed: MockUpstream) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=keyed.base_url, api_key="sk-wrong", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await client.messages.create(model="m", max_tokens=10, messages=USER)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


async def test_right_key_is_accepted_as_bearer(keyed: MockUpstream) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{keyed.base_url}/v1", api_key="sk-right", max_retries=0
    ) as oai_client:
        await oai_client.chat.completions.create(model="m", messages=USER)
    async with anthropic.AsyncAnthropic(
        base_url=keyed.base_url, auth_token="sk-right", max_retries=0
    ) as claude_client:
        await claude_client.messages.create(model="m", max_tokens=10, messages=USER)
    assert [s.headers["authorization"] for s in keyed.seen] == ["Bearer sk-right"] * 2


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
async def test_right_key_is_accepted_as_x_api_key(
    keyed: MockUpstream, http: aiohttp.ClientSession, path: str
) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": USER}
    async with http.post(keyed.base_url + path, json=body, headers={"x-api-key": "sk-right"}) as r:
        assert r.status == 200


async def test_request_without_key_is_rejected_but_recorded(
    keyed: MockUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{keyed.base_url}/v1/models", headers={"x-request-id": "nokey"}) as r:
        assert r.status == 401
        body = orjson.loads(await r.read())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert keyed.seen_request_ids == ["nokey"]


# --- timing ------------------------------------------------------------------------------


async def test_latency_delays_the_answer(http: aiohttp.ClientSession) -> None:
    async with MockUpstream(MockConfig(latency_ms=200)) as mock:
        started = time.monotonic()
        async with http.get(f"{mock.base_url}/v1/models") as r:
            await r.read()
        assert time.monotonic() - started >= 0.2


async def test_chunk_delay_spaces_stream_chunks(http: aiohttp.ClientSession) -> None:
    async with MockUpstream(MockConfig(tokens=3, chunk_delay_ms=50)) as mock:
        body = {"model": "m", "messages": USER, "stream": True}
        started = time.monotonic()
        async with http.post(f"{mock.base_url}/v1/chat/completions", json=body) as r:
            await r.read()
        # 5 events (3 tokens, stop, [DONE]) means 4 gaps of 50 ms.
        assert time.monotonic() - started >= 0.2
