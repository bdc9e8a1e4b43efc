"""Upstream error events inside a stream are replaced by the gateway's own (docs/security.md,
"An upstream that echoes the credential", defence 1) however the upstream spells them, as
long as a client would read them as an error: the key written with JSON ``\\u`` escapes
(the OpenAI SDK reads ``data.get("error")`` after ``json.loads``), JSON that orjson refuses
but Python's ``json`` reads (``NaN``, ``Infinity``, a lone surrogate escape), and an
Anthropic ``event: error`` whose data is not a JSON object (the Anthropic SDK shows such
data as the error's message, verbatim)."""

from __future__ import annotations

import json

import pytest

from garrison.domain import AuthStyle, Level, Model, UpstreamApi
from garrison.gateway.metering import parse_event, split_events
from garrison.gateway.sse_relay import StreamRelay
from garrison.gateway.upstream_errors import rewrite_stream_errors

# What the upstream's message says: never for the caller.
SECRET = b"db-7.corp.internal account 4417"

OPENAI_EVENTS = [
    b'data: {"\\u0065rror":{"message":"' + SECRET + b'"}}\n\n',
    b'data: {"err\\u006Fr":{"message":"' + SECRET + b'"}}\n\n',
    b'data: {"e\\u0072ror":"' + SECRET + b'"}\n\n',
    b'data: {"error":{"message":"' + SECRET + b'"},"n":NaN}\n\n',
    b'data: {"error":{"message":"' + SECRET + b'"},"n":-Infinity}\n\n',
    b'data: {"error":{"message":"' + SECRET + b' \\ud800"}}\n\n',
]
ANTHROPIC_EVENTS = [
    b"event: error\ndata: " + SECRET + b"\n\n",
    b'event: error\ndata: "' + SECRET + b'"\n\n',
    b'event: error\ndata: ["' + SECRET + b'"]\n\n',
    b'event: error\ndata: {"type":"error","error":{"message":"' + SECRET + b'"},"n":NaN}\n\n',
]


def model(api: UpstreamApi) -> Model:
    return Model(
        id="m1",
        name="client-name",
        upstream_url="http://127.0.0.1:1/v1",
        upstream_model="upstream-name",
        api=api,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=frozenset(),
    )


def relayed(api: UpstreamApi, event: bytes, *, whole: bool) -> bytes:
    relay = StreamRelay(api, model(api), drop_usage_chunk=False)
    if whole:
        return relay.feed(event) + relay.flush()
    return b"".join(relay.feed(event[i : i + 1]) for i in range(len(event))) + relay.flush()


def sdk_reads_an_error(api: UpstreamApi, out: bytes) -> bool:
    """Whether an SDK reading ``out`` would raise an error showing upstream text: the OpenAI
    SDK's ``json.loads(data)`` then ``data.get("error")``, the Anthropic SDK's
    ``event: error``."""
    for raw in split_events(out):
        event = parse_event(raw)
        if event.data is None:
            continue
        if api is UpstreamApi.ANTHROPIC and event.name == b"error" and SECRET in event.data:
            return True
        try:
            data = json.loads(event.data)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("error") and SECRET.decode() in str(data):
            return True
    return False


@pytest.mark.parametrize("whole", [True, False], ids=["one-read", "byte-by-byte"])
@pytest.mark.parametrize(
    ("api", "event"),
    [(UpstreamApi.OPENAI, e) for e in OPENAI_EVENTS]
    + [(UpstreamApi.ANTHROPIC, e) for e in ANTHROPIC_EVENTS],
)
def test_an_error_event_in_any_spelling_is_replaced(
    api: UpstreamApi, event: bytes, whole: bool
) -> None:
    assert sdk_reads_an_error(api, event)  # the upstream's event, read by the SDK: shown
    out = relayed(api, event, whole=whole)
    assert SECRET not in out
    assert not sdk_reads_an_error(api, out)
    assert b"error" in out  # the gateway's own error event took its place


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"choices":[{"delta":{"content":"caf\\u00e9 \\u0041"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"an error, NaN"}}]}\n\n',
        b"event: content_block_delta\ndata: error is just a word\n\n",
        b": error in a comment\n\n",
    ],
)
def test_events_that_are_not_errors_pass_unchanged(event: bytes) -> None:
    for api in UpstreamApi.OPENAI, UpstreamApi.ANTHROPIC:
        assert relayed(api, event, whole=True) == event
        assert (
            rewrite_stream_errors(
                event, api, upstream_model="upstream-name", model_name="client-name", key=None
            )
            == event
        )
