"""Which text of a request the content rules read: every string in the parsed JSON body,
whatever field it sits in, except known binary payloads.

The body is walked generically (no list of fields to keep up to date with each API): the
messages and their parts, ``system`` blocks, ``document`` blocks with text sources, a
message's ``name``, tool definitions and their schemas, tool calls and tool results,
``response_format`` schemas, ``/v1/completions`` ``suffix``, ``metadata`` and every field a
future API version adds. Object keys are read too, unless they are a bare identifier (the
shape of every API field name); free text written as a key (a schema property named
``ignore previous instructions`` or ``ignore-all-previous-instructions``) is read.

Left out, because they are media the model does not read as words:

- ``{"type": "base64", "data": ...}`` sources (Anthropic images and PDF documents), unless
  the media type is ``text/*``, whose decoded text is read;
- ``data:`` URLs with ``;base64,`` (OpenAI ``image_url``, ``file_data``), again unless
  ``text/*``;
- ``input_audio.data`` (OpenAI audio input).

A payload is only left out when it is base64 (its alphabet only): text in a binary slot that
is not base64 is read like any other string.

The walk is iterative and bounded (``CONTENT_WALK_MAX_DEPTH``, ``CONTENT_WALK_MAX_VALUES``);
a body past either bound is refused (``ContentUncheckable``), never half-read.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

from garrison.errors import BadRequest

# Nesting the walk follows: real requests nest well under 40 (a JSON schema inside a tool
# definition inside a request); the re-encoder stops at 254, so this is the tighter bound.
CONTENT_WALK_MAX_DEPTH = 128
# JSON values visited per body (strings, numbers, containers): ~1M values cost the walk
# ~0.15 s; a real request has far fewer (a 300K-token id list is the largest legitimate one).
CONTENT_WALK_MAX_VALUES = 1_000_000
# How far into a string a data: URL's header (``data:<type>;base64,``) may end.
DATA_URL_HEADER_MAX = 256

# A bare identifier: the shape of an API field name ("role", "input_schema", "topP"). No
# hyphens or dots: "ignore-previous-instructions" has word boundaries a rule can match on;
# "ignore_previous_instructions" has none (``_`` is a word character), so \b-rules could not.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_IDENTIFIER_MAX = 64  # characters: the longest key _IDENTIFIER reads as a field name
_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\r\n]*")
_DATA_URL = re.compile(r"data:([^;,]{0,200})((?:;[^;,]{0,200}){0,8});base64,", re.IGNORECASE)
# Keys whose string value is an audio clip or file: base64 payloads by definition.
_BINARY_PARENTS = frozenset({"input_audio"})
_BINARY_KEYS = frozenset({"file_data"})
# Keys whose string value may be a ``data:`` URL the upstream decodes as media (OpenAI
# ``image_url.url``, the older bare ``image_url`` string, ``file.file_data``). Anywhere else
# (a message's ``content``, a ``text`` part, ``prompt``) a string is text the model reads,
# even when it starts with ``data:…;base64,``.
_DATA_URL_KEYS = frozenset({"url", "image_url", "file_data"})


class ContentUncheckable(BadRequest):
    """The body is nested deeper or has more values than the content walk reads."""

    default_message = "The request is too deeply nested or has too many parts to be checked."


def _is_identifier(key: str) -> bool:
    """``key`` is a bare identifier (``_IDENTIFIER``). The same test as that regex's
    ``fullmatch`` (an ASCII Python identifier is exactly ``[A-Za-z_][A-Za-z0-9_]*``) with
    three string methods instead: a fifth of the cost, on every key of every body."""
    return len(key) <= _IDENTIFIER_MAX and key.isascii() and key.isidentifier()


def _is_base64(text: str) -> bool:
    return _BASE64.fullmatch(text) is not None


def _decoded_text(payload: str) -> str:
    """The text a base64 ``text/*`` payload carries (bad base64 is read as it stands)."""
    try:
        return base64.b64decode(payload, validate=False).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return payload


def _data_url_text(value: str) -> str | None:
    """For a ``data:…;base64,`` URL: its decoded text when ``text/*``, "" for media; None
    when the string is not such a URL (it is then read as text)."""
    header = _DATA_URL.match(value, 0, DATA_URL_HEADER_MAX)
    if header is None:
        return None
    payload = value[header.end() :]
    if not _is_base64(payload):
        return None
    if header.group(1).strip().lower().startswith("text/"):
        return _decoded_text(payload)
    return ""


def _binary_text(node: dict[str, Any], key: str, value: str, parent: str | None) -> str | None:
    """What to read of a string in a binary slot: None when the slot is not binary (read it
    as text), "" for media, the decoded text of a ``text/*`` payload."""
    if key == "data" and node.get("type") == "base64" and _is_base64(value):
        media = node.get("media_type")
        if isinstance(media, str) and media.strip().lower().startswith("text/"):
            return _decoded_text(value)
        return ""
    binary_slot = (key == "data" and parent in _BINARY_PARENTS) or key in _BINARY_KEYS
    if binary_slot and _is_base64(value):
        return ""
    return None


# A child to visit: (value, key it sits under, key of the object holding it).
_Child = tuple[Any, str | None, str | None]


def _dict_children(node: dict[str, Any], key: str | None) -> Iterator[_Child]:
    for child_key, child in node.items():
        if isinstance(child_key, str) and child_key and not _is_identifier(child_key):
            yield child_key, None, key
        # Only a "data" or a binary key can be a binary slot (``_binary_text``): the call is
        # skipped for every other string (nearly all of them).
        if isinstance(child, str) and (child_key == "data" or child_key in _BINARY_KEYS):
            binary = _binary_text(node, child_key, child, key)
            if binary is not None:
                if binary:
                    yield binary, None, key
                continue
        yield child, child_key, key


def request_texts(body: Any) -> list[str]:
    """Every piece of text in a parsed request body, in document order, empty ones left out.
    Raises ``ContentUncheckable`` past the depth or value bound. The walk holds one iterator
    per level of nesting (memory grows with depth, not with the number of values)."""
    texts: list[str] = []
    stack: list[Iterator[_Child]] = [iter([(body, None, None)])]
    visited = 1
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        value, key, parent = child
        if isinstance(value, str):
            if value:
                is_url = key in _DATA_URL_KEYS and value[:5].lower() == "data:"
                decoded = _data_url_text(value) if is_url else None
                texts.append(value if decoded is None else decoded)
            continue
        if not isinstance(value, dict | list):
            continue
        # The body itself is depth 0: this container's children sit at len(stack).
        if len(stack) > CONTENT_WALK_MAX_DEPTH:
            raise ContentUncheckable(f"nested deeper than {CONTENT_WALK_MAX_DEPTH}")
        visited += len(value)
        if visited > CONTENT_WALK_MAX_VALUES:
            raise ContentUncheckable(f"over {CONTENT_WALK_MAX_VALUES} values")
        if isinstance(value, list):
            stack.append((item, key, parent) for item in value)
        else:
            stack.append(_dict_children(value, key))
    return [t for t in texts if t]
