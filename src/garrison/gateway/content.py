"""Content rules in flight: the prompt's text is matched against the detection rules'
patterns before the call is forwarded. Only the ids of matching rules are kept (in the
audit event, for the detectors); the text itself is never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Text scanned per call: a long prompt's first 64K characters (the regexes run over all of
# it on every call, so this bounds their cost).
CONTENT_SCAN_MAX_CHARS = 64 * 1024


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                if isinstance(item.get("text"), str):
                    yield item["text"]
                if "content" in item:
                    yield from _texts(item["content"])


def prompt_text(body: dict[str, Any]) -> str:
    """The human-written text of a chat, completion, messages or embeddings request."""
    parts: list[str] = []
    size = 0
    for key in ("system", "messages", "prompt", "input"):
        for text in _texts(body.get(key)):
            if not text:
                continue
            parts.append(text)
            size += len(text) + 1  # and the newline that joins it
            if size >= CONTENT_SCAN_MAX_CHARS:
                return "\n".join(parts)[:CONTENT_SCAN_MAX_CHARS]
    return "\n".join(parts)


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
