"""Token accounting, for whole answers and for SSE streams passed through event by event.

Usage comes from the upstream's own usage fields when present. For OpenAI-style streams the
gateway asks the upstream for a final usage chunk (``stream_options.include_usage``); if the
client had not asked for it, that chunk is removed so the client receives exactly what it
would have received without the gateway. When an upstream sends no usage at all, output
tokens are counted as content-bearing chunks (one token per chunk for llama.cpp and vLLM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from garrison.domain import UpstreamApi

# Bytes of one SSE event kept while waiting for its end: a single chunk never comes near this;
# an upstream that never ends an event must not make the gateway buffer without bound.
MAX_SSE_EVENT_BYTES = 1024 * 1024
# Largest token count an upstream may report for one call: ten times the longest context
# window served today (10M tokens). A larger (or negative) count is forged or broken: it is
# clamped into [0, this] and flagged, so quotas and volume detectors are not fooled.
MAX_REPORTED_TOKENS = 100_000_000


# vLLM-style servers put ``"usage": null`` on every chunk once usage is requested; those
# chunks need no JSON parse.
_NULL_USAGE = re.compile(rb'"usage":\s*null')
# The same field with its separator, to remove it from chunks when the client never asked
# for usage (so it receives exactly what it would have without the gateway).
_NULL_USAGE_FIELD = re.compile(rb'"usage":\s*null\s*,\s*|,\s*"usage":\s*null')
# A chunk that carries generated text (chat delta content or completion text), non-empty.
_CONTENT = re.compile(rb'"(?:content|text)":\s*"(?!")')


@dataclass(slots=True)
class Usage:
    tokens_in: int | None = None
    tokens_out: int | None = None
    counted_chunks: int = 0
    # What was wrong: "<field>.negative", ".too_large", ".not_integer" (six entries at most).
    flags: set[str] = field(default_factory=set)

    @property
    def output_tokens(self) -> int:
        return self.tokens_out if self.tokens_out is not None else self.counted_chunks

    def count(self, value: Any, name: str) -> int | None:
        """A reported token count, clamped into [0, MAX_REPORTED_TOKENS] (and flagged if it
        was not in it); None when the upstream reported no integer."""
        if isinstance(value, float):
            # A count is an integer (JSON parsers read one past 64 bits as a float): ignored,
            # as any other non-integer is, but flagged.
            self.flags.add(f"{name}.not_integer")
            return None
        number = _int(value)
        if number is None:
            return None
        if number < 0:
            self.flags.add(f"{name}.negative")
            return 0
        if number > MAX_REPORTED_TOKENS:
            self.flags.add(f"{name}.too_large")
            return MAX_REPORTED_TOKENS
        return number


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_from_body(api: UpstreamApi, body: Any) -> Usage:
    usage = Usage()
    if not isinstance(body, dict):
        return usage
    data = body.get("usage")
    if isinstance(data, dict):
        if api is UpstreamApi.ANTHROPIC:
            usage.tokens_in = usage.count(data.get("input_tokens"), "tokens_in")
            usage.tokens_out = usage.count(data.get("output_tokens"), "tokens_out")
        else:
            usage.tokens_in = usage.count(data.get("prompt_tokens"), "tokens_in")
            usage.tokens_out = usage.count(data.get("completion_tokens"), "tokens_out")
            if usage.tokens_out is None and usage.tokens_in is not None:
                usage.tokens_out = 0  # embeddings report only prompt tokens
    return usage


class SseMeter:
    """Feed upstream bytes, get back the bytes to send on; counts usage along the way."""

    def __init__(self, api: UpstreamApi, *, drop_usage_chunk: bool) -> None:
        self.api = api
        self.drop_usage_chunk = drop_usage_chunk
        self.usage = Usage()
        self._buf = b""
        self._sep: bytes | None = None
        self.overflow = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        sep = self._sep
        if sep is None:
            # SSE allows CRLF or LF line ends; sse-starlette (llama-cpp-python) sends CRLF.
            crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
            if crlf < 0 and lf < 0:
                return self._hold(buf)
            sep = self._sep = b"\r\n\r\n" if crlf >= 0 and (lf < 0 or crlf < lf) else b"\n\n"
        end = buf.rfind(sep)
        if end < 0:
            return self._hold(buf)
        cut = end + len(sep)
        complete, self._buf = buf[:cut], buf[cut:]
        if len(self._buf) > MAX_SSE_EVENT_BYTES:
            self.overflow = True
        if self.api is UpstreamApi.ANTHROPIC:
            self._anthropic(complete.split(sep))
            return complete
        return self._openai(complete, sep)

    @property
    def separator(self) -> bytes:
        """The event separator the upstream uses (LF LF until the first event is seen)."""
        return self._sep or b"\n\n"

    def _hold(self, buf: bytes) -> bytes:
        self._buf = buf
        if len(buf) > MAX_SSE_EVENT_BYTES:
            self.overflow = True
        return b""

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def _openai(self, complete: bytes, sep: bytes) -> bytes:
        kept: list[bytes] = []
        changed = False
        for event in complete.split(sep)[:-1]:
            if event.startswith((b"data: {", b"data:{")):
                if self.drop_usage_chunk and _NULL_USAGE.search(event):
                    event = _NULL_USAGE_FIELD.sub(b"", event, count=1)
                    changed = True
                if b'"usage"' in event and not _NULL_USAGE.search(event):
                    if not self._openai_usage(event):
                        changed = True
                        continue
                elif _CONTENT.search(event):
                    self.usage.counted_chunks += 1
            kept.append(event)
        if not changed:
            return complete
        return b"".join(event + sep for event in kept)

    def _openai_usage(self, event: bytes) -> bool:
        try:
            chunk = orjson.loads(event[event.index(b"{") :])
        except (orjson.JSONDecodeError, ValueError):
            return True
        if not isinstance(chunk, dict):
            return True
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        if choices and _CONTENT.search(event):
            self.usage.counted_chunks += 1
        if isinstance(usage, dict):
            self.usage.tokens_in = self.usage.count(usage.get("prompt_tokens"), "tokens_in")
            self.usage.tokens_out = self.usage.count(usage.get("completion_tokens"), "tokens_out")
            # The usage-only chunk we asked for on the client's behalf: not theirs to see.
            if self.drop_usage_chunk and not choices:
                return False
        return True

    def _anthropic(self, events: list[bytes]) -> None:
        for event in events:
            if event.startswith(b"event: content_block_delta"):
                self.usage.counted_chunks += 1
            elif event.startswith(b"event: message_start") or event.startswith(
                b"event: message_delta"
            ):
                data = event.find(b"data:")
                if data < 0:
                    continue
                try:
                    payload = orjson.loads(event[data + 5 :])
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(payload, dict):
                    continue
                usage = payload.get("usage")
                if usage is None and isinstance(payload.get("message"), dict):
                    usage = payload["message"].get("usage")
                if isinstance(usage, dict):
                    tin = self.usage.count(usage.get("input_tokens"), "tokens_in")
                    tout = self.usage.count(usage.get("output_tokens"), "tokens_out")
                    if tin is not None:
                        self.usage.tokens_in = tin
                    if tout is not None:
                        self.usage.tokens_out = tout
