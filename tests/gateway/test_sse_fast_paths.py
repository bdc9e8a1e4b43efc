"""The streaming path's fast paths give what the general paths give, on both sides of their
conditions: the one-line OpenAI chunk, the ``event:``/``data:`` Anthropic chunk, the
credential scrub of events, and StreamRelay against the steps it stands for."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.domain import AuthStyle, Level, Model, Secret, UpstreamApi
from garrison.gateway.credential_echo import (
    REDACTED,
    answer_forms,
    detection_forms,
    echo_forms,
    scrub_bytes,
    scrub_event,
)
from garrison.gateway.metering import SseMeter, Usage, parse_event
from garrison.gateway.sse_relay import StreamRelay
from garrison.gateway.upstream_call import client_model_bytes
from garrison.gateway.upstream_errors import rewrite_stream_errors
from tests.gateway.test_credential_echo import ECHOES, KEYS, UNALIGNED

OPENAI = UpstreamApi.OPENAI
ANTHROPIC = UpstreamApi.ANTHROPIC

Seen = tuple[int | None, int | None, int, frozenset[str]]


def seen(usage: Usage) -> Seen:
    return usage.tokens_in, usage.tokens_out, usage.counted_chunks, frozenset(usage.flags)


# ── OpenAI: one whole one-line event per chunk ─────────────────────────────────────────────

# Pieces of a chunk's JSON: the usual fields, the usage field in every spelling, content in
# every shape the pattern cares about, and fragments that only make sense when glued.
FIELDS = [
    b'"id":"c1"',
    b'"model":"m"',
    b'"usage":null',
    b'"usage": null',
    b'"usage":null ',
    b'"usage" :null',
    b'"usage":{"prompt_tokens":3,"completion_tokens":2}',
    b'"usage":{"prompt_tokens":-1}',
    b'"usage":{}',
    b'"choices":[{"delta":{"content":"x"}}]',
    b'"choices":[{"delta":{"content":""}}]',
    b'"choices":[{"delta":{"content": "y"}}]',
    b'"choices":[{"text":"z"}]',
    b'"choices":[{"delta":{"role":"assistant"}}]',
    b'"choices":[]',
    b'"content":',
    b'"x"',
    b"null",
    b" ",
]
PREFIXES = [b"data: ", b"data:", b"data:  ", b": ", b"event: ", b"data", b"id: "]


@st.composite
def one_line_events(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(st.sampled_from(FIELDS), max_size=5))
    glue = draw(st.sampled_from([b",", b", ", b" ,", b""]))
    body = glue.join(fields)
    if draw(st.booleans()):
        body = b"{" + body + b"}"
    if draw(st.booleans()):
        noise = draw(st.binary(max_size=20)).replace(b"\r", b"").replace(b"\n", b"")
        body = body + noise if draw(st.booleans()) else noise + body
    prefix = draw(st.sampled_from(PREFIXES))
    return prefix + body + draw(st.sampled_from([b"\n\n", b"\r\n\r\n"]))


def general(raw: bytes, drop: bool) -> tuple[bytes, Seen]:
    """Reference: the general per-event path (event_data and the patterns)."""
    meter = SseMeter(OPENAI, drop_usage_chunk=drop)
    out = meter._openai_event(raw)
    return out if out is not None else b"", seen(meter.usage)


def fed(raw: bytes, drop: bool) -> tuple[bytes, Seen]:
    meter = SseMeter(OPENAI, drop_usage_chunk=drop)
    out = meter.feed(raw) + meter.flush()
    return out, seen(meter.usage)


@given(one_line_events(), st.booleans())
def test_a_one_line_openai_chunk_gives_what_the_general_path_gives(raw: bytes, drop: bool) -> None:
    assert fed(raw, drop) == general(raw, drop)


@given(one_line_events(), st.booleans(), st.integers(min_value=1))
def test_a_one_line_openai_chunk_split_in_two_reads_gives_the_same(
    raw: bytes, drop: bool, cut: int
) -> None:
    cut = cut % len(raw)
    meter = SseMeter(OPENAI, drop_usage_chunk=drop)
    out = meter.feed(raw[:cut]) + meter.feed(raw[cut:]) + meter.flush()
    assert (out, seen(meter.usage)) == general(raw, drop)


@given(st.lists(one_line_events(), min_size=2, max_size=5), st.booleans())
def test_several_events_in_one_read_give_what_each_gives_alone(
    events: list[bytes], drop: bool
) -> None:
    meter = SseMeter(OPENAI, drop_usage_chunk=drop)
    out = meter.feed(b"".join(events)) + meter.flush()
    alone = [general(raw, drop) for raw in events]
    assert out == b"".join(o for o, _ in alone)
    assert meter.usage.counted_chunks == sum(s[2] for _, s in alone)


CHUNK = b'{"id":"c1","model":"m","choices":[{"delta":{"content":"hi"}}]}'
NULL_FIRST = b'{"usage":null,"id":"c1","model":"m","choices":[{"delta":{"content":"hi"}}]}'
NULL_AFTER_COMMA = b'{"id":"c1","model":"m","usage":null,"choices":[{"delta":{"content":"hi"}}]}'


@pytest.mark.parametrize(
    ("body", "drop", "expected"),
    [
        # fast: no usage field
        (CHUNK, True, CHUNK),
        # fast: ',"usage":null' removed, or kept when the client asked for usage
        (NULL_AFTER_COMMA, True, CHUNK),
        (NULL_AFTER_COMMA, False, NULL_AFTER_COMMA),
        # general: the field first in the object (its "," comes after it)
        (NULL_FIRST, True, CHUNK),
        # general: "usage": null spelled with a space
        (NULL_AFTER_COMMA.replace(b":null", b": null"), True, CHUNK),
    ],
)
def test_null_usage_fields_are_removed_only_when_usage_was_injected(
    body: bytes, drop: bool, expected: bytes
) -> None:
    out, usage = fed(b"data: " + body + b"\n\n", drop)
    assert out == b"data: " + expected + b"\n\n"
    assert usage[2] == 1


def test_a_chunk_with_a_null_and_a_real_usage_field_reads_the_real_one() -> None:
    body = b'{"usage":null,"choices":[],"usage":{"prompt_tokens":4}}'
    out, usage = fed(b"data: " + body + b"\n\n", True)
    assert (out, usage[0]) == (b"", 4)


def test_the_usage_chunk_is_still_dropped_when_injected() -> None:
    body = orjson.dumps({"id": "c1", "choices": [], "usage": {"prompt_tokens": 5}})
    out, usage = fed(b"data: " + body + b"\n\n", True)
    assert (out, usage[0]) == (b"", 5)


@pytest.mark.parametrize(
    "content", [b'"content":"x"', b'"content": "x"', b'"text":"x"', b'"content":""']
)
def test_content_chunks_are_counted_in_every_spelling(content: bytes) -> None:
    _, usage = fed(b"data: {" + content + b"}\n\n", False)
    assert usage[2] == (0 if content.endswith(b'""') else 1)


# ── Anthropic: "event:" line, "data:" line ─────────────────────────────────────────────────

NAMES = [b"content_block_delta", b"message_start", b"message_delta", b"ping", b""]
PAYLOADS = [
    b'{"type":"content_block_delta","delta":{"text":"x"}}',
    b'{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}',
    b'{"type":"message_delta","usage":{"output_tokens":9}}',
    b'{"usage":{"output_tokens":-3}}',
    b"not json",
]


@st.composite
def named_events(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(NAMES))
    event_line = draw(st.sampled_from([b"event: ", b"event:", b"event:  "])) + name
    data_line = draw(st.sampled_from([b"data: ", b"data:"])) + draw(st.sampled_from(PAYLOADS))
    lines = [event_line, data_line]
    if draw(st.booleans()):
        lines.reverse()
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, 2)), draw(st.sampled_from([b": c", b"id: 1", b"event"])))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines) + 1))
    return b"".join(line + end for line, end in zip([*lines, b""], ends, strict=False))


def byte_by_byte(api: UpstreamApi, raw: bytes) -> tuple[bytes, Seen]:
    """Reference: one byte per read, so every event goes through the general path."""
    meter = SseMeter(api, drop_usage_chunk=False)
    out = b"".join(meter.feed(raw[i : i + 1]) for i in range(len(raw))) + meter.flush()
    return out, seen(meter.usage)


@given(named_events())
def test_an_anthropic_chunk_gives_what_the_general_path_gives(raw: bytes) -> None:
    meter = SseMeter(ANTHROPIC, drop_usage_chunk=False)
    out = meter.feed(raw) + meter.flush()
    assert (out, seen(meter.usage)) == byte_by_byte(ANTHROPIC, raw)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"event: content_block_delta\ndata: {}\n\n", b"content_block_delta"),
        (b"event:content_block_delta\ndata: {}\n\n", b"content_block_delta"),
        (b"event:  content_block_delta\ndata: {}\n\n", b" content_block_delta"),
        (b"event:\ndata: {}\n\n", b"message"),
        (b"event: content_block_delta\r\ndata: {}\r\n\r\n", b"content_block_delta"),
    ],
)
def test_an_anthropic_event_name_is_read_as_the_spec_says(raw: bytes, name: bytes) -> None:
    assert parse_event(raw).name == name
    meter = SseMeter(ANTHROPIC, drop_usage_chunk=False)
    assert meter.feed(raw) == raw
    assert meter.usage.counted_chunks == (name == b"content_block_delta")


# ── credential scrub of events ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize("key", KEYS)
def test_every_form_holds_a_detection_form(key: str) -> None:
    forms = answer_forms(key)
    detect = detection_forms(forms)
    assert all(any(d in f for d in detect) for f in forms)


def test_detection_needs_fewer_tests_than_the_forms_for_a_usual_key() -> None:
    forms = answer_forms("sk-bench-upstream-0123456789abcdef")
    assert len(detection_forms(forms)) < len(forms)


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if c.isalnum() else c for c in text)


@st.composite
def echoed_texts(draw: st.DrawFn) -> tuple[str, bytes]:
    key = draw(st.sampled_from(KEYS))
    makers = [*ECHOES.values(), *UNALIGNED.values(), _escaped, lambda k: k[: len(k) // 2]]
    parts = draw(st.lists(st.sampled_from(makers), max_size=3))
    filler = draw(st.lists(st.text(max_size=8), min_size=len(parts) + 1, max_size=len(parts) + 1))
    text = filler[0] + "".join(
        make(key) + rest for make, rest in zip(parts, filler[1:], strict=True)
    )
    if draw(st.booleans()):
        text = text.replace("\\", "\\\\") + "\\n"
    return key, text.encode()


@given(echoed_texts())
def test_scrub_event_gives_what_scrub_bytes_gives(case: tuple[str, bytes]) -> None:
    key, data = case
    assert scrub_event(data, echo_forms(key)) == scrub_bytes(data, answer_forms(key))


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("how", sorted(ECHOES))
def test_scrub_event_removes_every_echoed_form(key: str, how: str) -> None:
    echo = ECHOES[how](key)
    out = scrub_event(f'data: {{"content": "{echo}"}}\n\n'.encode(), echo_forms(key))
    assert echo.encode() not in out and key.encode() not in out
    assert REDACTED.encode() in out


def test_scrub_event_undoes_escapes_that_spell_the_key() -> None:
    key = "sk-proj-AbCdEf0123456789/+=ghIJkl"
    out = scrub_event(f'{{"content": "{_escaped(key)}"}}'.encode(), echo_forms(key))
    assert out == f'{{"content": "{REDACTED}"}}'.encode()


# ── StreamRelay ────────────────────────────────────────────────────────────────────────────

KEY = "sk-relay-upstream-0123456789abcdef"


def model(*, name: str = "client-name", key: str | None = KEY) -> Model:
    return Model(
        id="m1",
        name=name,
        upstream_url="http://127.0.0.1:1/v1",
        upstream_model="upstream-name",
        api=OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=frozenset(),
        upstream_key=Secret(key) if key is not None else None,
    )


def steps(m: Model, chunks: list[bytes], drop: bool) -> tuple[bytes, Seen]:
    """Reference: the steps forward_stream took one by one before StreamRelay."""
    meter = SseMeter(OPENAI, drop_usage_chunk=drop)
    old, new = client_model_bytes(m)
    forms = answer_forms(KEY) if m.upstream_key is not None else ()
    key = m.upstream_key.reveal() if m.upstream_key is not None else None
    out = b""
    for chunk in chunks:
        piece = meter.feed(chunk)
        if not piece:
            continue
        piece = scrub_bytes(piece.replace(old, new), forms)
        out += rewrite_stream_errors(
            piece, OPENAI, upstream_model=m.upstream_model, model_name=m.name, key=key
        )
    rest = meter.flush()
    out += rewrite_stream_errors(
        scrub_bytes(rest, forms),
        OPENAI,
        upstream_model=m.upstream_model,
        model_name=m.name,
        key=key,
    )
    return out, seen(meter.usage)


STREAM = [
    b'data: {"model":"upstream-name","usage":null,"choices":[{"delta":{"content":"a"}}]}\n\n',
    b'data: {"model":"upstream-name","usage":null,"choices":[{"delta":{"content":"'
    + KEY.encode()
    + b'"}}]}\n\n',
    b'data: {"model":"upstream-name","usage":null,"choices":[{"delta":{"content":"\\u0073k-',
    b'relay-upstream-0123456789abcdef"}}]}\n\ndata: {"error":{"message":"boom ' + KEY.encode(),
    b'"}}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
    b"data: [DONE]\n\ndata: unterminated upstream-name " + KEY.encode(),
]


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize(
    "m", [model(), model(name="upstream-name"), model(key=None)], ids=["both", "same", "nokey"]
)
def test_the_relay_gives_what_the_steps_gave(m: Model, drop: bool) -> None:
    relay = StreamRelay(OPENAI, m, drop_usage_chunk=drop)
    out = b"".join(relay.feed(chunk) for chunk in STREAM) + relay.flush()
    assert (out, seen(relay.usage)) == steps(m, STREAM, drop)


def test_the_relay_never_passes_the_key_nor_the_upstream_name() -> None:
    relay = StreamRelay(OPENAI, model(), drop_usage_chunk=True)
    out = b"".join(relay.feed(chunk) for chunk in STREAM[:-1])
    assert KEY.encode() not in out and b"upstream-name" not in out
    assert out.count(REDACTED.encode()) == 2


def test_the_relay_reports_an_overlong_event() -> None:
    from garrison.gateway.metering import MAX_SSE_EVENT_BYTES

    relay = StreamRelay(OPENAI, model(), drop_usage_chunk=True)
    assert relay.feed(b"data: " + b"x" * MAX_SSE_EVENT_BYTES) == b""
    assert relay.overflow
