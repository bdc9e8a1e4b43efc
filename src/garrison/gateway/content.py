"""Content rules in flight: the prompt's text is matched against the detection rules'
patterns before the call is forwarded. Only the ids of matching rules are kept (in the
audit event, for the detectors); the text itself is never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Text scanned per call: 64K characters of a long prompt, its first and last halves (the
# regexes run over all of it on every call, so this bounds their cost).
CONTENT_SCAN_MAX_CHARS = 64 * 1024


# Keys that hold structure, identifiers or media rather than words someone wrote: skipped
# (an image's base64 would only eat the budget).
_STRUCTURE = frozenset(
    {
        "role",
        "type",
        "id",
        "name",
        "tool_call_id",
        "tool_use_id",
        "image_url",
        "url",
        "source",
        "media_type",
        "cache_control",
        "index",
        "model",
    }
)


def _texts(value: Any) -> Iterable[str]:
    """Every string inside a value: message parts, tool definitions (descriptions and
    parameter schemas), tool calls and their arguments, whatever their shape."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _STRUCTURE:
                yield from _texts(item)


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a chat, completion, messages or embeddings request, tool definitions and
    tool-call arguments included. A long prompt is scanned at its start and its end (half
    the budget each), so filler cannot push an instruction out of reach at either end."""
    parts: list[str] = []
    for key in ("system", "messages", "prompt", "input", "tools", "functions"):
        parts.extend(t for t in _texts(body.get(key)) if t)
    text = "\n".join(parts)
    if len(text) <= CONTENT_SCAN_MAX_CHARS:
        return text
    half = CONTENT_SCAN_MAX_CHARS // 2
    return text[:half] + "\n" + text[-(CONTENT_SCAN_MAX_CHARS - half - 1) :]


def scan(rules: tuple[tuple[str, re.Pattern[str]], ...], body: dict[str, Any]) -> list[str]:
    if not rules:
        return []
    text = prompt_text(body)
    if not text:
        return []
    hits: list[str] = []
    for rule_id, pattern in rules:
        if rule_id not in hits and pattern.search(text):
            hits.append(rule_id)
    return hits
