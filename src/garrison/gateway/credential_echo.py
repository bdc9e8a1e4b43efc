"""The model's own upstream credential, echoed back by the upstream: its forms, and removal.

A proxy upstream (LiteLLM, a debugging shim, a hostile server) can echo the credential the
gateway sent: raw, as the ``Bearer …`` header value, URL-encoded, JSON-escaped or base64'd
(an ``Authorization`` header dumped in a debug body). Pattern scrubbing misses short keys and
base64 keys with ``/+=``; knowing the exact key, the gateway removes every form of it from
whatever reaches the caller. The forms are computed once per key (cached) and matched as
plain substrings (no regex on the hot path).
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, quote_plus

from garrison.domain import Model

_Bytes = TypeVar("_Bytes", bytes, bytearray)

# What a removed credential is replaced with.
REDACTED = "[redacted]"
# Base64 fragments shorter than this are not removed: a four-character fragment (what a short
# key leaves at an unaligned offset) would corrupt ordinary model output. The key itself and
# its URL- and JSON-escaped forms are removed whatever their length.
MIN_B64_FRAGMENT_CHARS = 8
# Credentials longer than this are not expanded into forms (only their raw form is removed):
# bounded work per key. The admin API's UPSTREAM_KEY_MAX_CHARS caps keys at the same length.
MAX_KEY_CHARS = 8192


def _b64_fragments(data: bytes) -> set[str]:
    """The part of base64(``prefix + data``) that depends only on ``data``, for the three
    byte alignments ``data`` can start at, in the standard and the URL-safe alphabet."""
    out: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        whole = (offset + len(data)) // 3 * 4  # full groups only: the last one mixes bytes
        start = 4 if offset else 0  # the first group mixes prefix bytes in
        fragment = encoded[start:whole]
        if len(fragment) >= MIN_B64_FRAGMENT_CHARS:
            out.add(fragment)
            out.add(fragment.replace("+", "-").replace("/", "_"))
    return out


@functools.lru_cache(maxsize=1024)
def credential_forms(key: str) -> tuple[str, ...]:
    """Every form of ``key`` to remove, longest first (so a longer form is replaced whole)."""
    if not key or len(key) > MAX_KEY_CHARS:
        return (key,) if key else ()
    raw = key.encode()
    forms = {
        key,
        quote(key, safe=""),
        quote_plus(key),
        key.replace("/", "\\/"),  # JSON encoders that escape the solidus
        key.replace("\\", "\\\\").replace('"', '\\"'),
    }
    forms |= _b64_fragments(raw)
    forms |= _b64_fragments(b"Bearer " + raw)
    return tuple(sorted((f for f in forms if f), key=lambda f: (-len(f), f)))


@functools.lru_cache(maxsize=1024)
def answer_forms(key: str) -> tuple[bytes, ...]:
    """The same forms as bytes, for answers (bodies and stream events)."""
    return tuple(f.encode() for f in credential_forms(key))


def detection_forms(forms: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The ``forms`` that hold none of the others. Every form holds one of them (the base64
    of ``Bearer <key>`` holds the base64 of the key), so a text without any of these holds
    no form at all: fewer substring tests for the usual text, which holds none."""
    return tuple(f for f in forms if not any(g != f and g in f for g in forms))


@dataclass(frozen=True, slots=True)
class EchoForms:
    """One credential's forms (:func:`answer_forms`) and the few that tell whether any of
    them is there (:func:`detection_forms`), computed once per stream."""

    forms: tuple[bytes, ...]
    detect: tuple[bytes, ...]


@functools.lru_cache(maxsize=1024)
def echo_forms(key: str) -> EchoForms:
    forms = answer_forms(key)
    return EchoForms(forms, detection_forms(forms))


def scrub_text(text: str, key: str | None) -> str:
    """``text`` with every form of ``key`` replaced."""
    if not key:
        return text
    for form in credential_forms(key):
        if form in text:
            text = text.replace(form, REDACTED)
    return text


# A JSON ``\\u`` escape of a printable ASCII character other than ``"`` and ``\\`` (decoding
# one of those leaves valid JSON meaning the same string).
_PRINTABLE_ESCAPE = re.compile(
    rb"\\u00(?:2[013-9A-Fa-f]|[346][0-9A-Fa-f]|5[0-9ABabD-Fd-f]|7[0-9A-Ea-e])"
)


def _unescaped(match: re.Match[bytes]) -> bytes:
    return bytes([int(match.group(0)[2:], 16)])


def _scrub_escaped(data: bytes, forms: tuple[bytes, ...]) -> bytes:
    """``data`` unchanged unless it spells a form with ``\\u`` escapes (a JSON reader turns
    ``"\\u0073k-…"`` into the key, which no byte form matches); then those escapes are
    undone and the forms removed. Quote by quote parsing is not needed (an upstream can put
    stray quotes in an event to throw it off)."""
    plain = _PRINTABLE_ESCAPE.sub(_unescaped, data)
    if plain == data or not any(form in plain for form in forms):
        return data
    for form in forms:
        plain = plain.replace(form, REDACTED.encode())
    return plain


def scrub_bytes(data: _Bytes, forms: tuple[bytes, ...]) -> _Bytes:
    """``data`` with every one of ``forms`` replaced (from :func:`answer_forms`), also where
    a JSON string spells it with ``\\u`` escapes."""
    for form in forms:
        if form in data:
            data = data.replace(form, REDACTED.encode())
    if forms and b"\\" in data and b"\\u" in data:  # one byte's search first: the quicker one
        plain = _scrub_escaped(bytes(data), forms)
        if plain != data:
            return type(data)(plain)
    return data


def scrub_event(data: bytes, echo: EchoForms) -> bytes:
    """What :func:`scrub_bytes` gives for ``echo.forms``; a text with none of the detection
    forms and no backslash (the usual stream event) is returned after those tests alone."""
    for form in echo.detect:
        if form in data:
            return scrub_bytes(data, echo.forms)
    if b"\\" in data and b"\\u" in data:
        return scrub_bytes(data, echo.forms)
    return data


def model_key(model: Model) -> str | None:
    return model.upstream_key.reveal() if model.upstream_key is not None else None


def model_answer_forms(model: Model) -> tuple[bytes, ...]:
    """The forms of ``model``'s credential to remove from its answers (none without one)."""
    key = model_key(model)
    return answer_forms(key) if key else ()
