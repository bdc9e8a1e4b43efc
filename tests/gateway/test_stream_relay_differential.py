"""StreamRelay against the per-chunk steps of forward_stream as they were before it (commit
23a715a, the gateway before issue 18's streaming fast paths): adversarial upstream byte
streams, cut into arbitrary reads, must give the client the same bytes and the gateway the
same usage, byte for byte. The old ``metering`` and ``credential_echo`` modules are loaded
from git (the test is skipped where that commit is not in the repository)."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garrison.domain import AuthStyle, Level, Model, Secret, UpstreamApi
from garrison.gateway.metering import MAX_SSE_EVENT_BYTES, Usage
from garrison.gateway.sse_relay import StreamRelay
from garrison.gateway.upstream_call import client_model_bytes
from garrison.gateway.upstream_errors import rewrite_stream_errors
from tests.support.git_source import source_at

# The commit whose streaming steps are the reference.
BEFORE = "23a715a"


# Changes made on purpose since BEFORE, applied to the reference as (old text, new text):
# a dropped usage chunk keeps its leading line ends (the LF of a CRLF cut from its CR by a
# read: test_metering's test_a_read_ending_between_the_cr_and_lf_of_an_event_end_…).
INTENDED: dict[str, list[tuple[bytes, bytes]]] = {
    "src/garrison/gateway/metering.py": [
        (
            b"""                    if not self._openai_usage(data):
                        changed = True
                        continue
""",
            b"""                    if not self._openai_usage(data):
                        changed = True
                        if raw[:1] in (b"\\r", b"\\n"):
                            kept.append(raw[: len(raw) - len(raw.lstrip(b"\\r\\n"))])
                        continue
""",
        )
    ]
}


def _load_old(path: str, name: str) -> ModuleType | None:
    text = source_at(BEFORE, path)
    if text is None:
        return None
    for before, after in INTENDED.get(path, []):
        assert text.count(before) == 1
        text = text.replace(before, after)
    where = Path(tempfile.mkdtemp()) / f"{name}.py"
    where.write_bytes(text)
    spec = importlib.util.spec_from_file_location(name, where)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


OLD_METERING = _load_old("src/garrison/gateway/metering.py", "_old_metering_23a715a")
OLD_ECHO = _load_old("src/garrison/gateway/credential_echo.py", "_old_echo_23a715a")

pytestmark = pytest.mark.skipif(
    OLD_METERING is None or OLD_ECHO is None, reason=f"commit {BEFORE} not in this repository"
)

OPENAI = UpstreamApi.OPENAI
ANTHROPIC = UpstreamApi.ANTHROPIC

Seen = tuple[int | None, int | None, int, frozenset[str]]


def seen(usage: Usage) -> Seen:
    return usage.tokens_in, usage.tokens_out, usage.counted_chunks, frozenset(usage.flags)


def model(api: UpstreamApi, key: str | None, name: str, upstream: str) -> Model:
    return Model(
        id="m1",
        name=name,
        upstream_url="http://127.0.0.1:1/v1",
        upstream_model=upstream,
        api=api,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=frozenset(),
        upstream_key=Secret(key) if key is not None else None,
    )


def old_steps(
    api: UpstreamApi, m: Model, chunks: list[bytes], drop: bool
) -> tuple[list[bytes], Seen, bool]:
    """forward_stream's steps at BEFORE, one read at a time: what each read gave the client
    (b"" while an event is held), the usage, and whether the stream was cut as overlong."""
    assert OLD_METERING is not None and OLD_ECHO is not None
    meter = OLD_METERING.SseMeter(api, drop_usage_chunk=drop)
    old, new = client_model_bytes(m)
    key = m.upstream_key.reveal() if m.upstream_key is not None else None
    forms = OLD_ECHO.answer_forms(key) if key else ()
    outs: list[bytes] = []
    for chunk in chunks:
        out = meter.feed(chunk)
        if meter.overflow:
            return outs, seen(meter.usage), True
        if not out:
            outs.append(b"")
            continue
        if old != new:
            out = out.replace(old, new)
        if forms:
            out = OLD_ECHO.scrub_bytes(out, forms)
        outs.append(
            rewrite_stream_errors(
                out, api, upstream_model=m.upstream_model, model_name=m.name, key=key
            )
        )
    rest = rewrite_stream_errors(
        OLD_ECHO.scrub_bytes(meter.flush(), forms),
        api,
        upstream_model=m.upstream_model,
        model_name=m.name,
        key=key,
    )
    outs.append(rest)
    return outs, seen(meter.usage), False


def new_steps(
    api: UpstreamApi, m: Model, chunks: list[bytes], drop: bool
) -> tuple[list[bytes], Seen, bool]:
    relay = StreamRelay(api, m, drop_usage_chunk=drop)
    outs: list[bytes] = []
    for chunk in chunks:
        out = relay.feed(chunk)
        if relay.overflow:
            return outs, seen(relay.usage), True
        outs.append(out)
    outs.append(relay.flush())
    return outs, seen(relay.usage), False


# ── Adversarial streams ─────────────────────────────────────────────────────────────────────

KEYS = [
    "sk-relay-upstream-0123456789abcdef",
    "k3y",
    "usage",
    "content",
    "sk/+==ab/cd+ef==",
    'q"u\\o/te',
    "error",
    "upstream-name",
    "data",
]
NAMES = ["upstream-name", "client-name", "m", "usage", "sk-relay-upstream-0123456789abcdef"]


def _forms(key: str) -> list[bytes]:
    import base64
    from urllib.parse import quote, quote_plus

    out = [
        key,
        f"Bearer {key}",
        quote(key, safe=""),
        quote_plus(key),
        key.replace("/", "\\/"),
        base64.b64encode(key.encode()).decode(),
        base64.urlsafe_b64encode(key.encode()).decode(),
        base64.b64encode(f"Bearer {key}".encode()).decode(),
        base64.b64encode(f"x{key}".encode()).decode(),
        "".join(f"\\u{ord(c):04x}" for c in key),
        "\\u00" + f"{ord(key[0]):02x}" + key[1:],
    ]
    return [f.encode() for f in out]


@st.composite
def pieces(draw: st.DrawFn, key: str, upstream: str) -> bytes:
    """One piece of an upstream stream: JSON fragments, field names, line ends, the key in
    a form, the model names."""
    form = draw(st.sampled_from(_forms(key)))
    name = upstream.encode()
    return draw(
        st.sampled_from(
            [
                b"data: ",
                b"data:",
                b"data:  ",
                b"event: ",
                b"event:",
                b"event: error",
                b"event: content_block_delta",
                b"event: message_start",
                b"event: message_delta",
                b": comment",
                b":",
                b"id: 1",
                b"retry: 5",
                b"\n",
                b"\n\n",
                b"\r\n",
                b"\r\n\r\n",
                b"\r",
                b"\r\r",
                b"{",
                b"}",
                b",",
                b'"usage":null',
                b'"usage": null',
                b',"usage":null',
                b'"usage":null,',
                b'"x":"\\"usage\\":null"',
                b'"x":"usage"',
                b'"usage":{"prompt_tokens":3,"completion_tokens":2}',
                b'"usage":{"input_tokens":5,"output_tokens":7}',
                b'"message":{"usage":{"input_tokens":9}}',
                b'"usage":{"prompt_tokens":-1,"completion_tokens":1e3}',
                b'"choices":[{"delta":{"content":"x"}}]',
                b'"choices":[{"delta":{"content":""}}]',
                b'"choices":[]',
                b'"choices":[{"text":"z"}]',
                b'"content":"',
                b'"content": "',
                b'"text":"',
                b'"reasoning_content":"x"',
                b'"error":{"message":"boom ',
                b'"error":"',
                b'"object":"error"',
                b'"type":"error"',
                b'"model":"' + name + b'"',
                b'"',
                b"\\",
                b"\\u",
                b"\\u0073",
                b"[DONE]",
                b"null",
                b" ",
                form,
                form,
                form[: len(form) // 2],
                form[len(form) // 2 :],
                name,
                draw(st.binary(max_size=6)),
            ]
        )
    )


@st.composite
def streams(draw: st.DrawFn) -> tuple[UpstreamApi, Model, list[bytes], bool]:
    api = draw(st.sampled_from([OPENAI, ANTHROPIC]))
    key = draw(st.sampled_from([*KEYS, None]))
    upstream = draw(st.sampled_from(NAMES))
    name = draw(st.sampled_from(NAMES))
    m = model(api, key, name, upstream)
    body = b"".join(draw(st.lists(pieces(key or "sk-none", upstream), max_size=40)))
    # Cut the stream into reads at arbitrary points (TCP gives no event boundaries).
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return api, m, chunks, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_the_relay_gives_the_client_and_the_meter_what_the_old_steps_gave(
    case: tuple[UpstreamApi, Model, list[bytes], bool],
) -> None:
    api, m, chunks, drop = case
    assert new_steps(api, m, chunks, drop) == old_steps(api, m, chunks, drop)


@st.composite
def whole_events(draw: st.DrawFn) -> tuple[UpstreamApi, Model, list[bytes], bool]:
    """Streams of well-formed events, one per read (the shape the fast paths take)."""
    api = draw(st.sampled_from([OPENAI, ANTHROPIC]))
    key = draw(st.sampled_from([*KEYS, None]))
    upstream = draw(st.sampled_from(NAMES))
    m = model(api, key, draw(st.sampled_from(NAMES)), upstream)
    chunks = []
    for _ in range(draw(st.integers(1, 6))):
        head = draw(
            st.sampled_from(
                [b"", b"event: message_delta\n", b"event:content_block_delta\n", b"event: error\n"]
            )
        )
        prefix = draw(st.sampled_from([b"data: ", b"data:"]))
        inner = b"".join(draw(st.lists(pieces(key or "sk-none", upstream), max_size=6)))
        inner = inner.replace(b"\n", b"").replace(b"\r", b"")
        body = b"{" + inner + b"}" if draw(st.booleans()) else inner
        end = draw(st.sampled_from([b"\n\n", b"\r\n\r\n"]))
        if end == b"\r\n\r\n":
            head = head.replace(b"\n", b"\r\n")
        chunks.append(head + prefix + body + end)
    if draw(st.booleans()):
        chunks.append(b"data: " + draw(pieces(key or "sk-none", upstream)))  # unterminated
    return api, m, chunks, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(whole_events())
def test_whole_events_one_per_read_give_what_the_old_steps_gave(
    case: tuple[UpstreamApi, Model, list[bytes], bool],
) -> None:
    api, m, chunks, drop = case
    assert new_steps(api, m, chunks, drop) == old_steps(api, m, chunks, drop)


@pytest.mark.parametrize("api", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_events_near_the_size_limit_give_what_the_old_steps_gave(
    api: UpstreamApi, extra: int
) -> None:
    key = "sk-relay-upstream-0123456789abcdef"
    m = model(api, key, "client-name", "upstream-name")
    filler = b"x" * (MAX_SSE_EVENT_BYTES + extra - 64)
    big = b'data: {"choices":[{"delta":{"content":"' + filler + key.encode() + b'"}}]}'
    for chunks in ([big + b"\n\n"], [big[:1000], big[1000:] + b"\n\n"], [big, b"\n\n"]):
        assert new_steps(api, m, chunks, True) == old_steps(api, m, chunks, True)


@pytest.mark.parametrize("drop", [True, False])
def test_a_read_cut_between_cr_and_lf_before_the_usage_chunk(drop: bool) -> None:
    key = "sk-relay-upstream-0123456789abcdef"
    m = model(OPENAI, key, "client-name", "upstream-name")
    stream = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    cut = stream.index(b"\r\n\r\n") + 3
    new = new_steps(OPENAI, m, [stream[:cut], stream[cut:]], drop)
    assert new == old_steps(OPENAI, m, [stream[:cut], stream[cut:]], drop)
    assert b"".join(new[0]) == b"".join(new_steps(OPENAI, m, [stream], drop)[0])
