"""Scrub an upstream error message before a client sees it.

(A second line of defence: only the gateway's own sentences for known message shapes reach
a caller, see ``upstream_errors``; they pass through here all the same.)

A context-length error is useful to the caller; the upstream's host, addresses, account ids,
keys and internal model name are not theirs to see. What survives is the message with those
replaced, cut to a bounded length.
"""

from __future__ import annotations

import re

from garrison.gateway.limits import MAX_ERROR_MESSAGE_CHARS

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+"), "[url]"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "[address]"),
    (
        re.compile(r"\[?(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])\]?"),
        "[address]",
    ),
    (re.compile(r"\b(?:sk|pk|rk|org|proj|key|gk|acct)[-_][A-Za-z0-9_-]{6,}\b"), "[redacted]"),
    (re.compile(r"\b(?:[A-Za-z0-9-]+\.)+(?:[A-Za-z]{2,})(?::\d+)?\b"), "[host]"),
    (re.compile(r"\b[A-Za-z0-9_-]{32,}\b"), "[redacted]"),
)


def scrub_message(text: str, *, replace: dict[str, str]) -> str:
    """``replace`` maps exact strings (upstream model name, upstream host) to safe ones."""
    for old, new in replace.items():
        if old:
            text = text.replace(old, new)
    for pattern, token in _PATTERNS:
        text = pattern.sub(token, text)
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = text[:MAX_ERROR_MESSAGE_CHARS] + "…"
    return text
