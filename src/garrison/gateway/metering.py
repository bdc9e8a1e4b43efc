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


# The end of an SSE event: a line terminator followed by an empty line (WHATWG HTML,
# "Server-sent events", parsing an event stream: CRLF, LF or CR end a line). A CR counts alone
# only when no LF follows it, so the LF of a CRLF is never taken for an empty line.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
# One line of an event (its terminator excluded).
_LINE = re.compile(rb"\r\n|\n|\r")
# The first byte of a line terminator.
_LINE_ENDS = (b"\r", b"\n")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """The fields of one event that metering reads: its name and its data (the ``data``
    lines joined with LF, as the spec's dispatch does)."""

    name: bytes
    data: bytes | None


def event_data(raw: bytes) -> bytes | None:
    """The data of one event; the common one-line ``data: …`` event without a split."""
    line = raw.rstrip(b"\r\n")
    if line[:5] == b"data:" and b"\n" not in line and b"\r" not in line:
        return line[6:] if line[5:6] == b" " else line[5:]
    return parse_event(raw).data


def parse_event(raw: bytes) -> SseEvent:
    """Parse one event's lines per the spec: ``field: value`` (one space after the colon is
    dropped), a line starting with ``:`` is a comment, a line without a colon is a field
    with an empty value; ``id`` and ``retry`` are not needed here."""
    name = b"message"
    data: list[bytes] = []
    for line in _LINE.split(raw):
        if not line or line[:1] == b":":
            continue
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value or b"message"
    return SseEvent(name, b"\n".join(data) if data else None)


def split_events(data: bytes) -> list[bytes]:
    """``data`` cut into its events (each with its terminating empty line), as the spec
    splits them; bytes after the last complete event, if any, come last."""
    out: list[bytes] = []
    begin = 0
    for match in _EVENT_END.finditer(data):
        out.append(data[begin : match.end()])
        begin = match.end()
    if begin < len(data):
        out.append(data[begin:])
    return out


def _one_event(data: bytes) -> bool:
    """``data`` is one line and its empty line, ended by LF LF or CRLF CRLF."""
    n = len(data)
    first = data.find(b"\n")
    if first == n - 2:
        return data[-1] == 0x0A and b"\r" not in data
    if first == n - 3:
        return data.endswith(b"\r\n\r\n") and data.find(b"\r") == n - 4
    return False


def _named_event(data: bytes) -> tuple[bytes, bytes] | None:
    """The name and data of ``data`` when it is exactly ``event:`` line, ``data:`` line, empty
    line, all ended by LF (the usual Anthropic chunk); None for any other shape. The same
    result as :func:`parse_event` for that shape, without its split."""
    n = len(data)
    if not data.startswith(b"event:") or not data.endswith(b"\n\n") or b"\r" in data:
        return None
    second = data.find(b"\n") + 1  # the second line: the data line, ended by the first LF LF
    if data.find(b"\n", second) != n - 2 or not data.startswith(b"data:", second):
        return None
    name = data[7 : second - 1] if data.startswith(b" ", 6) else data[6 : second - 1]
    value = second + 6 if data.startswith(b" ", second + 5) else second + 5
    return name or b"message", data[value : n - 2]


class SseMeter:
    """Feed upstream bytes, get back the bytes to send on; counts usage along the way.

    Events are split exactly as the SSE spec says (any of the three line terminators, mixed
    within one stream), and each event is passed on as soon as its terminating empty line has
    arrived; bytes of an event not yet complete are held (at most ``MAX_SSE_EVENT_BYTES``).
    An event is changed only to remove usage the client never asked for."""

    def __init__(self, api: UpstreamApi, *, drop_usage_chunk: bool) -> None:
        self.api = api
        self.drop_usage_chunk = drop_usage_chunk
        self.usage = Usage()
        self._buf = b""
        self.overflow = False

    def feed(self, data: bytes) -> bytes:
        held = len(self._buf)
        if not held:
            # The usual chunk: exactly one whole event (no scan, no split).
            if self.api is UpstreamApi.ANTHROPIC:
                named = _named_event(data)
                if named is not None:
                    self._anthropic(*named)
                    return data
                if _one_event(data):
                    event = parse_event(data)
                    self._anthropic(event.name, event.data)
                    return data
            elif _one_event(data):
                out = self._openai_one(data)
                return b"" if out is None else out
        buf = self._buf + data if held else data
        # Only the new bytes (and the two before them, which may start a terminator) can
        # complete an event: never rescan what was already scanned.
        cut = 0
        starts: list[tuple[int, int]] = []  # (start, end) of each complete event
        begin = 0
        for match in _EVENT_END.finditer(buf, max(0, held - 2)):
            starts.append((begin, match.end()))
            begin = cut = match.end()
        if not cut:
            return self._hold(buf)
        complete, self._buf = buf[:cut], buf[cut:]
        if len(self._buf) > MAX_SSE_EVENT_BYTES:
            self.overflow = True
        if self.api is UpstreamApi.ANTHROPIC:
            for lo, hi in starts:
                event = parse_event(complete[lo:hi])
                self._anthropic(event.name, event.data)
            return complete
        return self._openai(complete, starts)

    def _hold(self, buf: bytes) -> bytes:
        self._buf = buf
        if len(buf) > MAX_SSE_EVENT_BYTES:
            self.overflow = True
        return b""

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def _openai(self, complete: bytes, spans: list[tuple[int, int]]) -> bytes:
        kept: list[bytes] = []
        changed = False
        for lo, hi in spans:
            raw = complete[lo:hi]
            out = self._openai_one(raw) if _one_event(raw) else self._openai_event(raw)
            if out is not raw:
                changed = True
            if out is not None:
                kept.append(out)
            elif raw[:1] in _LINE_ENDS:
                # A dropped event's leading line ends stay: the LF of a CRLF whose CR ended
                # the previous read (which the spec makes that event's end) is that event's
                # end still, in the bytes the client gets as much as when unsplit.
                kept.append(raw[: len(raw) - len(raw.lstrip(b"\r\n"))])
        if not changed:
            return complete
        return b"".join(kept)

    def _openai_one(self, raw: bytes) -> bytes | None:
        """One whole event of one line (as :func:`_one_event` says): what
        :meth:`_openai_event` gives, found with substring tests alone for the usual chunk (no
        ``"usage"``, or one ``"usage":null``, with ``,`` before it when it is to be removed);
        any other chunk goes to :meth:`_openai_event`."""
        if raw.startswith(b"data: {"):
            start = 6
        elif not raw.startswith(b"data:"):
            return raw  # a comment or another field: no data, or empty data
        else:
            start = 6 if raw.startswith(b" ", 5) else 5
            if not raw.startswith(b"{", start):
                return raw
        at = raw.find(b'"usage"', start)
        if at >= 0:
            if not raw.startswith(b'"usage":null', at) or raw.find(b'"usage"', at + 12) >= 0:
                return self._openai_event(raw)
            if self.drop_usage_chunk:
                if raw[at - 1] != 0x2C:  # not a ","
                    return self._openai_event(raw)
                # The first match of _NULL_USAGE_FIELD: the "," and the field.
                raw = raw[: at - 1] + raw[at + 12 :]
        # _CONTENT on the data, i.e. on ``raw`` from ``start`` on (after the data come only
        # line ends, which no match can take in); first the compact ``"content":"x`` as a
        # plain substring (where present, a match of the pattern).
        at = raw.find(b'"content":"', start)
        if (at >= 0 and not raw.startswith(b'"', at + 11)) or _CONTENT.search(raw, start):
            self.usage.counted_chunks += 1
        return raw

    def _openai_event(self, raw: bytes) -> bytes | None:
        """One whole event, any shape: the bytes to pass on (``raw`` itself when unchanged),
        None to drop it."""
        data = event_data(raw)
        if data is not None and data[:1] == b"{":
            if self.drop_usage_chunk and _NULL_USAGE.search(raw):
                raw = _NULL_USAGE_FIELD.sub(b"", raw, count=1)
                data = _NULL_USAGE_FIELD.sub(b"", data, count=1)
            if b'"usage"' in data and not _NULL_USAGE.search(data):
                if not self._openai_usage(data):
                    return None
            elif _CONTENT.search(data):
                self.usage.counted_chunks += 1
        return raw

    def _openai_usage(self, event: bytes) -> bool:
        try:
            chunk = orjson.loads(event)
        except orjson.JSONDecodeError:
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

    def _anthropic(self, name: bytes, data: bytes | None) -> None:
        if name == b"content_block_delta":
            self.usage.counted_chunks += 1
            return
        if name not in (b"message_start", b"message_delta") or data is None:
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
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
