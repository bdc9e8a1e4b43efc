"""Content rules in flight: the prompt's text is matched against the detection rules'
patterns before the call is forwarded. Only the ids of matching rules are kept (in the
audit event, for the detectors); the text itself is never stored.

What is read: every string of the body except binary payloads (``content_fields``), each
normalised (``garrison.detect.textnorm``), one piece per line. All of it is scanned,
however long, in windows of ``CONTENT_SCAN_CHUNK_CHARS`` that overlap by
``CONTENT_SCAN_OVERLAP_CHARS``: a match no longer than the overlap is always whole inside
one window, wherever the window boundaries fall. A body whose text is too large or too slow
to scan whole is refused (``ContentUncheckable``), never forwarded half-read.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from garrison.detect import textnorm
from garrison.detect.patterns import Matcher, compile_union
from garrison.gateway.content_fields import ContentUncheckable, request_texts

# ``scan`` raises ContentUncheckable; callers import both from here.
__all__ = ["ContentUncheckable", "prompt_text", "scan", "windows"]

# Characters matched per regex call: bounds one call's input (and the copy the engine makes
# of it); 64K characters is one long prompt, scanned whole in one call.
CONTENT_SCAN_CHUNK_CHARS = 64 * 1024
# Characters each window repeats from the one before: a match up to this long is found
# wherever it falls (the built-in patterns match at most ~250 characters).
CONTENT_SCAN_OVERLAP_CHARS = 4 * 1024
# Normalised characters scanned per request: above the largest body (8 MiB of JSON) with
# room for normalisation's growth, below what compatibility forms can expand to (up to 18x).
CONTENT_SCAN_MAX_CHARS = 16 * 1024 * 1024
# Seconds one request's scan (normalisation and matching) may take, checked between windows:
# a backstop, not a rate. An 8 MiB ASCII body scans in ~0.3 s and an 8 MiB non-ASCII one in
# ~1-3 s on the loaded 2-core bench machine (docs/benchmarks.md); hostile text takes longer.
CONTENT_SCAN_BUDGET_S = 5.0

textnorm.prepare()


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request the content rules read, as written (before normalisation): every
    string of the body (see ``content_fields``), one per line."""
    return "\n".join(request_texts(body))


def _segments(texts: list[str]) -> Iterator[str]:
    """The normalised text, one piece per line, in slices of at most a chunk of the input
    (normalised slice by slice, so no one copy is larger than a chunk's expansion)."""
    for n, text in enumerate(texts):
        if n:
            yield "\n"
        for start in range(0, len(text), CONTENT_SCAN_CHUNK_CHARS):
            yield textnorm.normalise(text[start : start + CONTENT_SCAN_CHUNK_CHARS])


def windows(segments: Iterable[str]) -> Iterator[str]:
    """Overlapping windows over the concatenated segments: each at most
    ``CONTENT_SCAN_CHUNK_CHARS`` long, each starting ``CONTENT_SCAN_OVERLAP_CHARS`` before
    the end of the one before. Raises ``ContentUncheckable`` past ``CONTENT_SCAN_MAX_CHARS``."""
    step = CONTENT_SCAN_CHUNK_CHARS - CONTENT_SCAN_OVERLAP_CHARS
    pending: list[str] = []
    size = total = 0
    emitted = False
    for segment in segments:
        total += len(segment)
        if total > CONTENT_SCAN_MAX_CHARS:
            raise ContentUncheckable(f"over {CONTENT_SCAN_MAX_CHARS} characters to scan")
        pending.append(segment)
        size += len(segment)
        if size < CONTENT_SCAN_CHUNK_CHARS:
            continue
        text = "".join(pending)
        start = 0
        while len(text) - start >= CONTENT_SCAN_CHUNK_CHARS:
            yield text[start : start + CONTENT_SCAN_CHUNK_CHARS]
            emitted = True
            start += step
        rest = text[start:]
        pending, size = [rest], len(rest)
    last = "".join(pending)
    # After a window, the last OVERLAP characters were already scanned; only more is new.
    if last and (not emitted or len(last) > CONTENT_SCAN_OVERLAP_CHARS):
        yield last


def _token_ids(prompt: Any) -> bool:
    """A ``/v1/completions`` prompt given as token ids (a list of integers, or of lists of
    them): the model reads it as text, no pattern can."""
    if not isinstance(prompt, list):
        return False
    return any(
        isinstance(item, int) or (isinstance(item, list) and any(isinstance(t, int) for t in item))
        for item in prompt
    )


@functools.lru_cache(maxsize=4)  # a rule set lives until the rules change: a few at most
def _union(rules: tuple[tuple[str, Matcher], ...]) -> Matcher | None:
    return compile_union([pattern for _, pattern in rules])


def _rule_ids(rules: tuple[tuple[str, Matcher], ...]) -> list[str]:
    """The rules' ids, each once, in rule order (a rule may have several patterns)."""
    return list(dict.fromkeys(rule_id for rule_id, _ in rules))


def _matches(rules: tuple[tuple[str, Matcher], ...], rule_id: str, text: str) -> bool:
    """One of the rule's patterns matches ``text``."""
    return any(pattern.search(text) for rid, pattern in rules if rid == rule_id)


def scan(
    rules: tuple[tuple[str, Matcher], ...],
    body: dict[str, Any],
    *,
    clock: Callable[[], float] = time.monotonic,
    kind: str | None = None,
) -> list[str]:
    """Ids of the rules whose patterns match the request's text, in rule order. Raises
    ``ContentUncheckable`` for a body that cannot be read or scanned whole (see the module
    docstring), and for a completions prompt given as token ids (``kind``: the endpoint's);
    each rule stops at its first matching pattern."""
    if not rules:
        return []
    if kind == "completions" and _token_ids(body.get("prompt")):
        raise ContentUncheckable(
            "prompt as token ids",
            public_message="A prompt given as token ids cannot be checked; send it as text.",
        )
    texts = request_texts(body)
    if not texts:
        return []
    any_of = _union(rules)
    if any_of is not None and sum(map(len, texts)) < CONTENT_SCAN_CHUNK_CHARS:
        # A short prompt (most calls): what ``windows`` would give, one window of the whole
        # normalised text, when that is shorter than a window; a miss of the union is then
        # the answer, without the generators and bookkeeping of the general path.
        whole = "\n".join([textnorm.normalise(text) for text in texts])
        if len(whole) < CONTENT_SCAN_CHUNK_CHARS:
            if not whole or any_of.search(whole) is None:
                return []
            return [rule_id for rule_id in _rule_ids(rules) if _matches(rules, rule_id, whole)]
    started = clock()
    rule_ids = {rule_id for rule_id, _ in rules}
    hit: set[str] = set()
    for n, window in enumerate(windows(_segments(texts))):
        if n and clock() - started > CONTENT_SCAN_BUDGET_S:
            raise ContentUncheckable(f"content scan over {CONTENT_SCAN_BUDGET_S} s")
        if any_of is not None and any_of.search(window) is None:
            continue  # no pattern matches this window: no need to ask each
        for rule_id, pattern in rules:
            if rule_id not in hit and pattern.search(window):
                hit.add(rule_id)
        if len(hit) == len(rule_ids):
            break
    return list(dict.fromkeys(rule_id for rule_id, _ in rules if rule_id in hit))
