"""Content rules in flight: the prompt's text is matched against the detection rules'
patterns before the call is forwarded. Only the ids of matching rules are kept (in the
audit event, for the detectors); the text itself is never stored.
"""

from __future__ import annotations

import re
from typing import Any

from garrison.detect import textnorm
from garrison.gateway.content_fields import request_texts

# Text scanned per call: 64K characters of a long prompt, its first and last halves (the
# regexes run over all of it on every call, so this bounds their cost).
CONTENT_SCAN_MAX_CHARS = 64 * 1024


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request the content rules read: every string of the body (see
    ``content_fields``), one per line. A long prompt is scanned at its start and its end
    (half the budget each), so filler cannot push an instruction out of reach at either
    end."""
    text = "\n".join(request_texts(body))
    if len(text) <= CONTENT_SCAN_MAX_CHARS:
        return text
    half = CONTENT_SCAN_MAX_CHARS // 2
    return text[:half] + "\n" + text[-(CONTENT_SCAN_MAX_CHARS - half - 1) :]


def scan(rules: tuple[tuple[str, re.Pattern[str]], ...], body: dict[str, Any]) -> list[str]:
    if not rules:
        return []
    text = textnorm.normalise(prompt_text(body))
    if not text:
        return []
    hits: list[str] = []
    for rule_id, pattern in rules:
        if rule_id not in hits and pattern.search(text):
            hits.append(rule_id)
    return hits
