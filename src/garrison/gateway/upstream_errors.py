"""Which upstream error messages a caller may see: an allow-list of known safe shapes.

An upstream's 4xx message can carry anything: its host, account ids, a stack trace, the
credential the gateway sent (echoed in full, in base64, URL-encoded). Scrubbing by pattern
cannot know every form, so the gateway does not pass the upstream's text at all. It
recognises a few messages that are useful to the caller (the context is too long, the
output budget is too large, the safety system refused) and writes its *own* fixed sentence
for each, into which only numbers taken from the upstream's message are put. Every other
message becomes the generic message of the status (``""`` here). The shapes are those of
OpenAI, Anthropic, vLLM and llama.cpp error messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from garrison.domain import UpstreamApi
from garrison.errors import UpstreamFailed
from garrison.gateway.apis import stream_error_event
from garrison.gateway.credential_echo import scrub_text
from garrison.gateway.metering import split_events
from garrison.gateway.scrub import scrub_message

# Characters of an upstream message searched for a known shape: every known message is far
# shorter; searching a 64 KiB message would be work for nothing.
MAX_MESSAGE_SCAN_CHARS = 2048

_N = r"(\d{1,9})"  # a number the fixed sentence may quote (at most nine digits)


@dataclass(frozen=True, slots=True)
class Shape:
    """A known message: where ``pattern`` matches, the caller sees ``template`` (the
    pattern's groups, all numbers, filled in)."""

    name: str
    pattern: re.Pattern[str]
    template: str


def _shape(name: str, pattern: str, template: str) -> Shape:
    return Shape(name, re.compile(pattern, re.IGNORECASE), template)


_CONTEXT_ADVICE = "Please reduce the length of the messages or completion."

# First match wins: the more specific shape of a family comes first.
SHAPES: tuple[Shape, ...] = (
    # Anthropic
    _shape(
        "anthropic_prompt_too_long",
        rf"prompt is too long: {_N} tokens > {_N} maximum",
        "prompt is too long: {0} tokens > {1} maximum",
    ),
    _shape(
        "prompt_too_long_context",
        rf"prompt is too long\b[^.]{{0,200}}?maximum context length is {_N} tokens",
        "prompt is too long: maximum context length is {0} tokens",
    ),
    _shape("prompt_too_long", r"prompt is too long\b", "prompt is too long"),
    _shape(
        "anthropic_max_tokens",
        rf"max_tokens: {_N} > {_N}, which is the maximum allowed number of output tokens",
        "max_tokens: {0} > {1}, which is the maximum allowed number of output tokens "
        "for this model",
    ),
    # vLLM
    _shape(
        "vllm_max_tokens",
        rf"is too large: {_N}\. This model's maximum context length is {_N} tokens and your "
        rf"request has {_N} input tokens",
        "max_tokens is too large: {0}. This model's maximum context length is {1} tokens and "
        "your request has {2} input tokens.",
    ),
    # OpenAI (and vLLM's older wording)
    _shape(
        "openai_context_requested",
        rf"maximum context length is {_N} tokens\.? However, you requested {_N} tokens",
        "This model's maximum context length is {0} tokens. However, you requested {1} "
        "tokens. " + _CONTEXT_ADVICE,
    ),
    _shape(
        "openai_context",
        rf"maximum context length is {_N} tokens",
        "This model's maximum context length is {0} tokens. " + _CONTEXT_ADVICE,
    ),
    # llama.cpp
    _shape(
        "llamacpp_context_sized",
        rf"request \({_N} tokens\) exceeds the available context size \({_N} tokens\)",
        "The request ({0} tokens) exceeds the available context size ({1} tokens).",
    ),
    _shape(
        "llamacpp_context",
        r"exceeds the available context size",
        "The request exceeds the available context size.",
    ),
)

# Error codes and types whose meaning the caller may know, with the fixed sentence for each.
SAFE_CODES: dict[str, str] = {
    "context_length_exceeded": "The request is longer than the model's context. " + _CONTEXT_ADVICE,
    "content_policy_violation": "The request was rejected by the model's safety system.",
    "content_filter": "The request was rejected by the model's safety system.",
}


@dataclass(frozen=True, slots=True)
class UpstreamErrorText:
    """What an upstream error body said, as far as it is in a known API shape."""

    message: str = ""
    code: str = ""
    type: str = ""


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_error(raw: bytes) -> UpstreamErrorText:
    """The message, code and type inside an OpenAI-, Anthropic- or FastAPI-shaped error."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UpstreamErrorText()
    if not isinstance(body, dict):
        return UpstreamErrorText()
    if isinstance(body.get("detail"), str):  # FastAPI
        return UpstreamErrorText(body["detail"])
    err = body.get("error", body)
    if isinstance(err, dict):
        text, code, kind = (_str(err.get(k)) for k in ("message", "code", "type"))
        return UpstreamErrorText(text, code, kind)
    return UpstreamErrorText(_str(err))


def safe_message(error: UpstreamErrorText) -> tuple[str, str]:
    """The sentence the caller may see for ``error`` and the name of the shape it matched;
    ``("", "generic")`` when it matched none (the caller then gets the status's message)."""
    text = error.message[:MAX_MESSAGE_SCAN_CHARS]
    for shape in SHAPES:
        found = shape.pattern.search(text)
        if found is not None:
            numbers = [str(int(g)) for g in found.groups()]
            return shape.template.format(*numbers), shape.name
    for value in (error.code, error.type):
        if value in SAFE_CODES:
            return SAFE_CODES[value], value
    return "", "generic"


def client_message(
    raw: bytes, *, upstream_model: str, model_name: str, key: str | None
) -> tuple[str, str]:
    """The message a caller sees for an upstream 4xx body ``raw`` (``""``: the status's
    generic message), and the shape it matched (for the audit record). The fixed sentence is
    scrubbed again all the same: the internal model name and every form of the credential."""
    message, shape = safe_message(read_error(raw))
    if message:
        message = scrub_text(scrub_message(message, replace={upstream_model: model_name}), key)
    return message, shape


# A JSON escape of a letter of "error": how a JSON text spells the word without its bytes
# (``{"\\u0065rror": …}`` is read as ``{"error": …}``).
_ERROR_LETTER_ESCAPE = re.compile(rb"\\u00(?:65|72|6[Ff])")


def may_hold_error(out: bytes) -> bool:
    """Whether ``out`` can hold an error event a client would read: the word itself, or an
    escape spelling one of its letters. False for the usual event after two substring tests."""
    return b"error" in out or (b"\\u00" in out and _ERROR_LETTER_ESCAPE.search(out) is not None)


def _client_json(data: bytes) -> Any:
    """``data`` as a client's JSON reader reads it, None where none would: orjson first, then
    Python's ``json`` (the OpenAI SDK's reader: it also takes ``NaN``, ``Infinity`` and a
    lone surrogate escape, which orjson refuses) on the text decoded as clients decode it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None


def _is_error_event(event: bytes) -> dict[str, Any] | None:
    """The payload of an SSE error event (Anthropic ``event: error``, OpenAI/llama.cpp
    ``{"error": …}``, vLLM ``{"object": "error", …}``), else None. An ``event: error`` is
    one whatever its data (the Anthropic SDK shows data it cannot parse verbatim): ``{}``
    when that is not a JSON object."""
    name = b""
    data: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"event:"):
            name = line[6:].strip()
        elif line.startswith(b"data:"):
            data.append(line[5:].strip())
    if not data:
        return None
    payload = _client_json(b"\n".join(data))
    if name == b"error":
        return payload if isinstance(payload, dict) else {}
    if not isinstance(payload, dict):
        return None
    if (
        payload.get("type") == "error"
        or payload.get("object") == "error"
        or isinstance(payload.get("error"), dict | str)
    ):
        return payload
    return None


def rewrite_stream_errors(
    out: bytes,
    api: UpstreamApi,
    *,
    upstream_model: str,
    model_name: str,
    key: str | None,
) -> bytes:
    """``out`` (whole SSE events, split as the spec says) with every upstream error event
    replaced by the gateway's own error event: the message passes only as a known shape, as
    for a 4xx answer, however the upstream spells the event (:func:`may_hold_error`,
    :func:`_client_json`). Events that are not errors pass unchanged (and cost two substring
    tests)."""
    if not may_hold_error(out):
        return out
    events = split_events(out)
    changed = False
    for i, event in enumerate(events):
        if not may_hold_error(event):
            continue
        payload = _is_error_event(event)
        if payload is None:
            continue
        try:
            raw = orjson.dumps(payload)
        except orjson.JSONEncodeError:  # what only Python's json read (a lone surrogate)
            raw = b"{}"  # no known shape: the generic message
        message, _ = client_message(
            raw, upstream_model=upstream_model, model_name=model_name, key=key
        )
        exc = UpstreamFailed("upstream error event", public_message=message or None)
        events[i] = stream_error_event(api, exc)
        changed = True
    return b"".join(events) if changed else out
