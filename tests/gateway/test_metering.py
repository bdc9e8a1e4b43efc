"""Tests for ``garrison.gateway.metering``: usage from bodies and from SSE streams."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.domain import UpstreamApi
from garrison.gateway.metering import MAX_SSE_EVENT_BYTES, SseMeter, Usage, usage_from_body

OPENAI = UpstreamApi.OPENAI
ANTHROPIC = UpstreamApi.ANTHROPIC
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def data(payload: Any, *, sep: bytes = b"\n\n") -> bytes:
    body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + body + sep


def event(name: str, payload: Any, *, sep: bytes = b"\n\n") -> bytes:
    line_end = sep[: len(sep) // 2]
    return b"event: " + name.encode() + line_end + b"data: " + orjson.dumps(payload) + sep


def content(text: str, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return {**BASE, **(extra or {}), "choices": [choice]}


def role_only(*, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}
    return {**BASE, **(extra or {}), "choices": [choice]}


def stop(*, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
    return {**BASE, **(extra or {}), "choices": [choice]}


def usage_chunk(prompt: int = 11, completion: int = 3) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {**BASE, "choices": [], "usage": {**usage, "total_tokens": prompt + completion}}


def openai_stream(*, sep: bytes = b"\n\n", usage: bool = True, null_usage: bool = False) -> bytes:
    """Three content chunks, a stop chunk, optionally the usage chunk, then [DONE]."""
    extra = {"usage": None} if null_usage else None
    parts = [data(content(word, extra=extra), sep=sep) for word in ("Hel", "lo", "!")]
    parts.append(data(stop(extra=extra), sep=sep))
    if usage:
        parts.append(data(usage_chunk(), sep=sep))
    parts.append(data("[DONE]", sep=sep))
    return b"".join(parts)


def anthropic_stream(*, sep: bytes = b"\n\n", usage: bool = True) -> bytes:
    start_usage = {"input_tokens": 25, "output_tokens": 1} if usage else None
    message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    if start_usage is not None:
        message["usage"] = start_usage
    parts = [event("message_start", {"type": "message_start", "message": message}, sep=sep)]
    parts.append(event("ping", {"type": "ping"}, sep=sep))
    for word in ("Hel", "lo", "!"):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"text": word}}
        parts.append(event("content_block_delta", delta, sep=sep))
    message_delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    if usage:
        message_delta["usage"] = {"output_tokens": 3}
    parts.append(event("message_delta", message_delta, sep=sep))
    parts.append(event("message_stop", {"type": "message_stop"}, sep=sep))
    return b"".join(parts)


def run(meter: SseMeter, pieces: list[bytes]) -> bytes:
    return b"".join(meter.feed(piece) for piece in pieces) + meter.flush()


def whole(api: UpstreamApi, stream: bytes, *, drop: bool) -> tuple[bytes, SseMeter]:
    meter = SseMeter(api, drop_usage_chunk=drop)
    return run(meter, [stream]), meter


def usage_tuple(usage: Usage) -> tuple[int | None, int | None, int]:
    return usage.tokens_in, usage.tokens_out, usage.counted_chunks


# ── OpenAI streams ────────────────────────────────────────────────────────────────────────


def test_openai_usage_chunk_is_kept_when_the_client_asked() -> None:
    stream = openai_stream()
    out, _ = whole(OPENAI, stream, drop=False)
    assert out == stream


def test_openai_usage_is_read_from_the_usage_chunk() -> None:
    _, meter = whole(OPENAI, openai_stream(), drop=False)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (11, 3)


def test_openai_usage_chunk_is_dropped_when_injected() -> None:
    out, _ = whole(OPENAI, openai_stream(), drop=True)
    assert out == openai_stream(usage=False)


def test_openai_dropped_usage_chunk_is_still_counted() -> None:
    _, meter = whole(OPENAI, openai_stream(), drop=True)
    assert (meter.usage.tokens_in, meter.usage.output_tokens) == (11, 3)


def test_openai_stream_without_usage_passes_through_unchanged_when_dropping() -> None:
    stream = openai_stream(usage=False)
    out, _ = whole(OPENAI, stream, drop=True)
    assert out == stream


def test_openai_usage_chunk_with_choices_is_never_dropped() -> None:
    # vLLM's continuous usage stats: usage rides on content chunks, which are the client's.
    chunk = {**content("Hi"), "usage": {"prompt_tokens": 4, "completion_tokens": 1}}
    stream = data(chunk) + data("[DONE]")
    out, _ = whole(OPENAI, stream, drop=True)
    assert out == stream


def test_openai_compact_data_prefix_is_recognised() -> None:
    stream = b"data:" + orjson.dumps(usage_chunk()) + b"\n\n"
    out, meter = whole(OPENAI, stream, drop=True)
    assert (out, meter.usage.tokens_in) == (b"", 11)


def test_vllm_null_usage_chunks_are_not_taken_for_usage() -> None:
    stream = openai_stream(usage=False, null_usage=True)
    _, meter = whole(OPENAI, stream, drop=True)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (None, None)


def test_vllm_null_usage_fields_are_removed_when_usage_was_injected() -> None:
    # The client never asked for usage: it gets the chunks without the "usage": null field.
    stream = openai_stream(usage=False, null_usage=True)
    out, _ = whole(OPENAI, stream, drop=True)
    assert out == openai_stream(usage=False, null_usage=False)


def test_vllm_null_usage_fields_are_kept_when_the_client_asked() -> None:
    stream = openai_stream(usage=True, null_usage=True)
    out, _ = whole(OPENAI, stream, drop=False)
    assert out == stream


def test_vllm_null_usage_stream_loses_the_usage_chunk_and_the_null_fields() -> None:
    out, _ = whole(OPENAI, openai_stream(null_usage=True), drop=True)
    assert out == openai_stream(usage=False, null_usage=False)


def test_vllm_null_usage_stream_reads_the_final_usage() -> None:
    _, meter = whole(OPENAI, openai_stream(null_usage=True), drop=True)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (11, 3)


def test_vllm_null_usage_with_a_space_is_recognised() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],"usage": null}\n\n'
    _, meter = whole(OPENAI, chunk, drop=True)
    assert (meter.usage.tokens_in, meter.usage.counted_chunks) == (None, 1)


def test_crlf_stream_usage_chunk_is_dropped() -> None:
    out, _ = whole(OPENAI, openai_stream(sep=b"\r\n\r\n"), drop=True)
    assert out == openai_stream(sep=b"\r\n\r\n", usage=False)


def test_crlf_stream_is_kept_byte_identical_when_the_client_asked() -> None:
    stream = openai_stream(sep=b"\r\n\r\n")
    out, _ = whole(OPENAI, stream, drop=False)
    assert out == stream


def test_crlf_stream_usage_is_read() -> None:
    _, meter = whole(OPENAI, openai_stream(sep=b"\r\n\r\n"), drop=True)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (11, 3)


def test_content_mentioning_usage_is_not_taken_for_usage() -> None:
    stream = data(content('the "usage" field'))
    out, meter = whole(OPENAI, stream, drop=True)
    assert (out, meter.usage.tokens_in, meter.usage.counted_chunks) == (stream, None, 1)


def test_unparseable_usage_event_is_passed_through() -> None:
    stream = b'data: {"usage": {"prompt_tokens": 1,\n\n'
    out, _ = whole(OPENAI, stream, drop=True)
    assert out == stream


def test_done_and_comment_lines_pass_through() -> None:
    stream = b": keep-alive\n\n" + data("[DONE]")
    out, _ = whole(OPENAI, stream, drop=True)
    assert out == stream


# ── counting fallback ─────────────────────────────────────────────────────────────────────


def test_openai_without_usage_reports_no_reported_tokens() -> None:
    _, meter = whole(OPENAI, data(content("a")) + data(content("b")), drop=True)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (None, None)


def test_openai_without_usage_counts_one_token_per_content_chunk() -> None:
    stream = b"".join(data(content(w)) for w in ("a", "b", "c", "d"))
    _, meter = whole(OPENAI, stream, drop=True)
    assert meter.usage.output_tokens == 4


def test_openai_chunks_without_content_are_not_counted() -> None:
    # The module counts "content-bearing chunks": the role-only opening chunk and the
    # finish chunk (empty delta) that llama.cpp and vLLM send carry no token.
    stream = data(role_only()) + data(content("a")) + data(content("b")) + data(stop())
    _, meter = whole(OPENAI, stream, drop=True)
    assert meter.usage.output_tokens == 2


def test_reported_usage_wins_over_counted_chunks() -> None:
    stream = b"".join(data(content(w)) for w in "abcdef") + data(usage_chunk(completion=3))
    _, meter = whole(OPENAI, stream, drop=True)
    assert meter.usage.output_tokens == 3


def test_anthropic_without_usage_counts_content_block_deltas() -> None:
    _, meter = whole(ANTHROPIC, anthropic_stream(usage=False), drop=False)
    assert (meter.usage.tokens_out, meter.usage.output_tokens) == (None, 3)


# ── Anthropic streams ─────────────────────────────────────────────────────────────────────


def test_anthropic_input_tokens_come_from_message_start() -> None:
    _, meter = whole(ANTHROPIC, anthropic_stream(), drop=False)
    assert meter.usage.tokens_in == 25


def test_anthropic_output_tokens_come_from_the_last_message_delta() -> None:
    _, meter = whole(ANTHROPIC, anthropic_stream(), drop=False)
    assert meter.usage.tokens_out == 3


def test_anthropic_stream_passes_through_unchanged() -> None:
    stream = anthropic_stream()
    out, _ = whole(ANTHROPIC, stream, drop=True)
    assert out == stream


def test_anthropic_crlf_stream_usage_is_read() -> None:
    _, meter = whole(ANTHROPIC, anthropic_stream(sep=b"\r\n\r\n"), drop=False)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (25, 3)


def test_anthropic_message_delta_with_input_tokens_updates_input() -> None:
    stream = anthropic_stream() + event(
        "message_delta",
        {"type": "message_delta", "usage": {"input_tokens": 30, "output_tokens": 9}},
    )
    _, meter = whole(ANTHROPIC, stream, drop=False)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (30, 9)


def test_anthropic_message_delta_without_input_tokens_keeps_input() -> None:
    stream = anthropic_stream() + event(
        "message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}}
    )
    _, meter = whole(ANTHROPIC, stream, drop=False)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (25, 9)


def test_anthropic_malformed_usage_event_is_ignored() -> None:
    stream = b"event: message_delta\ndata: {not json\n\n"
    out, meter = whole(ANTHROPIC, stream, drop=False)
    assert (out, meter.usage.tokens_out) == (stream, None)


# ── split feeds ───────────────────────────────────────────────────────────────────────────


def test_event_split_inside_the_separator_is_held_then_released() -> None:
    stream = data(content("a"))
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    assert (meter.feed(stream[:-1]), meter.feed(stream[-1:])) == (b"", stream)


def test_crlf_separator_split_across_feeds_is_found() -> None:
    stream = data(content("a"), sep=b"\r\n\r\n") + data(content("b"), sep=b"\r\n\r\n")
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    out = [meter.feed(stream[:-3]), meter.feed(stream[-3:])]
    assert (b"".join(out), meter.usage.counted_chunks) == (stream, 2)


def test_flush_returns_an_unterminated_tail() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    meter.feed(b"data: {partial")
    assert meter.flush() == b"data: {partial"


STREAMS = st.sampled_from(
    [
        (OPENAI, openai_stream()),
        (OPENAI, openai_stream(null_usage=True)),
        (OPENAI, openai_stream(sep=b"\r\n\r\n")),
        (OPENAI, openai_stream(usage=False)),
        (ANTHROPIC, anthropic_stream()),
        (ANTHROPIC, anthropic_stream(sep=b"\r\n\r\n")),
    ]
)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@given(STREAMS, st.booleans(), st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_output_as_the_whole_stream(
    api_stream: tuple[UpstreamApi, bytes], drop: bool, cuts: list[int]
) -> None:
    api, stream = api_stream
    expected, _ = whole(api, stream, drop=drop)
    assert run(SseMeter(api, drop_usage_chunk=drop), split(stream, cuts)) == expected


@given(STREAMS, st.booleans(), st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_usage_as_the_whole_stream(
    api_stream: tuple[UpstreamApi, bytes], drop: bool, cuts: list[int]
) -> None:
    api, stream = api_stream
    _, reference = whole(api, stream, drop=drop)
    meter = SseMeter(api, drop_usage_chunk=drop)
    run(meter, split(stream, cuts))
    assert usage_tuple(meter.usage) == usage_tuple(reference.usage)


@given(STREAMS, st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_passes_the_stream_through_unchanged_when_not_dropping(
    api_stream: tuple[UpstreamApi, bytes], cuts: list[int]
) -> None:
    api, stream = api_stream
    assert run(SseMeter(api, drop_usage_chunk=False), split(stream, cuts)) == stream


@given(STREAMS)
def test_byte_by_byte_feed_gives_the_same_usage_as_the_whole_stream(
    api_stream: tuple[UpstreamApi, bytes],
) -> None:
    api, stream = api_stream
    _, reference = whole(api, stream, drop=True)
    meter = SseMeter(api, drop_usage_chunk=True)
    run(meter, [stream[i : i + 1] for i in range(len(stream))])
    assert usage_tuple(meter.usage) == usage_tuple(reference.usage)


# ── overflow ──────────────────────────────────────────────────────────────────────────────


def test_unterminated_event_past_the_limit_sets_overflow() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    meter.feed(b"data: " + b"x" * MAX_SSE_EVENT_BYTES)
    assert meter.overflow


def test_unterminated_event_at_the_limit_does_not_set_overflow() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    meter.feed(b"x" * MAX_SSE_EVENT_BYTES)
    assert not meter.overflow


def test_overflow_past_the_limit_across_many_feeds_is_flagged() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    meter.feed(data(content("a")))
    for _ in range(17):
        meter.feed(b"y" * (64 * 1024))
    assert meter.overflow


def test_overflow_is_flagged_when_the_tail_after_a_complete_event_is_past_the_limit() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=True)
    meter.feed(data(content("a")) + b"data: " + b"x" * MAX_SSE_EVENT_BYTES)
    assert meter.overflow


def test_normal_stream_does_not_set_overflow() -> None:
    _, meter = whole(OPENAI, openai_stream(), drop=True)
    assert not meter.overflow


# ── usage_from_body ───────────────────────────────────────────────────────────────────────


def test_openai_body_usage() -> None:
    usage = usage_from_body(OPENAI, {"usage": {"prompt_tokens": 7, "completion_tokens": 5}})
    assert (usage.tokens_in, usage.tokens_out) == (7, 5)


def test_anthropic_body_usage() -> None:
    usage = usage_from_body(ANTHROPIC, {"usage": {"input_tokens": 7, "output_tokens": 5}})
    assert (usage.tokens_in, usage.tokens_out) == (7, 5)


def test_embeddings_body_usage_has_zero_output_tokens() -> None:
    usage = usage_from_body(OPENAI, {"usage": {"prompt_tokens": 8, "total_tokens": 8}})
    assert (usage.tokens_in, usage.tokens_out) == (8, 0)


def test_anthropic_body_read_with_openai_names_gives_nothing() -> None:
    usage = usage_from_body(ANTHROPIC, {"usage": {"prompt_tokens": 7, "completion_tokens": 5}})
    assert (usage.tokens_in, usage.tokens_out) == (None, None)


@pytest.mark.parametrize("body", [None, [], "usage", 3, {}, {"usage": None}, {"usage": [1, 2]}])
def test_body_without_usable_usage_gives_empty_usage(body: Any) -> None:
    assert usage_tuple(usage_from_body(OPENAI, body)) == (None, None, 0)


@pytest.mark.parametrize("value", [True, "5", 5.0, None, [5]])
def test_non_integer_token_counts_are_ignored(value: Any) -> None:
    usage = usage_from_body(ANTHROPIC, {"usage": {"input_tokens": value, "output_tokens": value}})
    assert (usage.tokens_in, usage.tokens_out) == (None, None)


# ── events split as the SSE spec says ─────────────────────────────────────────────────────
TERMINATORS = (b"\n", b"\r\n", b"\r")


def test_a_crlf_event_after_an_lf_event_is_released_at_once() -> None:
    """The old splitter fixed the separator on the first event and then held a CRLF event
    back until the stream ended."""
    meter = SseMeter(OPENAI, drop_usage_chunk=False)
    first = data(content("a"))
    second = data(content("b"), sep=b"\r\n\r\n")
    assert meter.feed(first) == first
    assert meter.feed(second) == second


def test_cr_only_events_are_released_and_counted() -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=False)
    stream = data(content("a"), sep=b"\r\r") + data(usage_chunk(), sep=b"\r\r")
    assert meter.feed(stream) == stream
    assert usage_tuple(meter.usage) == (11, 3, 1)


def test_anthropic_usage_is_read_when_data_comes_before_event() -> None:
    payload = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 7}}
    raw = b"data: " + orjson.dumps(payload) + b"\nevent: message_delta\n\n"
    meter = SseMeter(ANTHROPIC, drop_usage_chunk=False)
    assert meter.feed(raw) == raw
    assert meter.usage.tokens_out == 7


def test_usage_split_over_several_data_lines_is_read() -> None:
    chunk = orjson.dumps(usage_chunk(5, 2)).decode()
    head, tail = chunk.split(',"usage"', 1)
    raw = f'data: {head},\ndata: "usage"{tail}\n\n'.encode()
    meter = SseMeter(OPENAI, drop_usage_chunk=False)
    assert meter.feed(raw) == raw
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == (5, 2)


def test_comments_and_retry_lines_pass_through_and_do_not_count() -> None:
    raw = b": keep-alive\n\nretry: 3000\n\n" + data(content("x"))
    meter = SseMeter(OPENAI, drop_usage_chunk=False)
    assert meter.feed(raw) == raw
    assert meter.usage.counted_chunks == 1


def _line_ends(draw: st.DrawFn, count: int) -> list[bytes]:
    """Line terminators where a lone CR is never followed by an LF (that pair is a CRLF)."""
    ends: list[bytes] = []
    for _ in range(count):
        choices = TERMINATORS if not ends or ends[-1] != b"\r" else (b"\r\n", b"\r")
        ends.append(draw(st.sampled_from(choices)))
    return ends


@st.composite
def mixed_streams(draw: st.DrawFn) -> tuple[UpstreamApi, bytes, tuple[int, int]]:
    """A real-shaped stream whose every line ends in any of the spec's three terminators,
    with multi-line data, comments and field order varied; and its usage."""
    api = draw(st.sampled_from([OPENAI, ANTHROPIC]))
    lines: list[list[bytes]] = []
    if api is OPENAI:
        for word in ("Hel", "lo"):
            lines.append([b"data: " + orjson.dumps(content(word))])
        chunk = orjson.dumps(usage_chunk(13, 2))
        head, tail = chunk.split(b',"usage"', 1)
        if draw(st.booleans()):
            lines.append([b"data: " + head + b",", b'data: "usage"' + tail])
        else:
            lines.append([b"data:" + chunk])
        lines.append([b"data: [DONE]"])
        expected = (13, 2)
    else:
        start = {"type": "message_start", "message": {"usage": {"input_tokens": 9}}}
        delta = {"type": "message_delta", "usage": {"output_tokens": 4}}
        for name, payload in (("message_start", start), ("message_delta", delta)):
            fields = [b"event: " + name.encode(), b"data: " + orjson.dumps(payload)]
            if draw(st.booleans()):
                fields.reverse()  # data before event: the spec allows any order
            lines.append(fields)
        expected = (9, 4)
    if draw(st.booleans()):
        lines.insert(1, [b": comment"])
    count = sum(len(event) + 1 for event in lines)
    ends = iter(_line_ends(draw, count))
    out = b"".join(b"".join(line + next(ends) for line in [*event, b""]) for event in lines)
    return api, out, expected


def _event_ends(stream: bytes) -> list[tuple[int, int]]:
    """Reference: where each event's terminating empty line starts and ends (a plain
    byte-by-byte reading of the spec's line rules)."""
    ends: list[tuple[int, int]] = []
    i, empty = 0, True
    while i < len(stream):
        if stream[i : i + 1] in (b"\r", b"\n"):
            size = 2 if stream[i : i + 2] == b"\r\n" else 1
            if empty:
                ends.append((i, i + size))
            empty = True
            i += size
        else:
            empty = False
            i += 1
    return ends


@given(mixed_streams(), st.lists(st.integers(min_value=0), max_size=30))
def test_every_event_is_released_as_soon_as_it_is_complete(
    case: tuple[UpstreamApi, bytes, tuple[int, int]], cuts: list[int]
) -> None:
    api, stream, expected_usage = case
    ends = _event_ends(stream)
    meter = SseMeter(api, drop_usage_chunk=False)
    released = 0
    fed = 0
    for piece in split(stream, cuts):
        out = meter.feed(piece)
        assert stream[released : released + len(out)] == out  # passed through unchanged
        released += len(out)
        fed += len(piece)
        complete = [(a, b) for a, b in ends if a < fed]
        if complete:
            # Released through the first byte of the empty line that ended the last
            # complete event, and nothing of an event not yet complete.
            assert released >= complete[-1][0] + 1
            assert released <= min(fed, complete[-1][1])
        else:
            assert released == 0
    assert released + len(meter.flush()) == len(stream)
    assert (meter.usage.tokens_in, meter.usage.tokens_out) == expected_usage


@pytest.mark.parametrize("drop", [True, False])
def test_a_read_ending_between_the_cr_and_lf_of_an_event_end_changes_no_byte(drop: bool) -> None:
    # The read ends with "\r\n\r" (the event ends there, as the spec says), the next one
    # starts with the "\n" and is the usage chunk the gateway asked for: dropping that chunk
    # must leave the "\n", else the client gets "…\r\n\rdata: [DONE]" (found by
    # test_any_split_gives_the_same_output_as_the_whole_stream).
    stream = openai_stream(sep=b"\r\n\r\n")
    usage_at = stream.index(b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk"', 600)
    assert b'"usage"' in stream[usage_at : stream.index(b"\r\n\r\n", usage_at)]
    expected, _ = whole(OPENAI, stream, drop=drop)
    cut = usage_at - 1
    assert stream[cut - 3 : cut + 1] == b"\r\n\r\n"
    assert run(SseMeter(OPENAI, drop_usage_chunk=drop), [stream[:cut], stream[cut:]]) == expected
