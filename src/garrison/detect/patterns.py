"""Content patterns, compiled for linear-time matching.

Every prompt is matched against every content pattern in flight, so a pattern that can
backtrack catastrophically (``(a+)+$`` on ``aaaa…b``) would let one request hold a worker for
minutes. Patterns are compiled with RE2 (``google-re2``), whose matching time is linear in
the text whatever the pattern, and it releases the GIL while it matches; it was also 8-90x
faster than ``re`` on ordinary text (docs/benchmarks.md, "Content scan").

What RE2 does not accept is refused when the rules load, with an error naming the rule and
the file: backreferences (``\\1``) and lookaround (``(?=``, ``(?!``, ``(?<=``), the features
that need backtracking. Syntax differences from Python's ``re`` to know when writing rules:
``\\b``, ``\\w``, ``\\d`` and ``\\s`` are ASCII-only (text is normalised to plain Latin letters
first, see ``textnorm``; for other scripts use ``\\pL``), ``\\Z`` is written ``\\z``.

Patterns are normalised like the text before compiling (``textnorm.normalise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import re2

from garrison.detect.textnorm import normalise

# RE2's memory for one compiled pattern (program and DFA cache; past it RE2 falls back to a
# slower, still linear, engine): RE2's default. Hostile text can fill every pattern's cache,
# so this times the pattern count is a memory ceiling; 64 MiB was 2-4x faster than 8 MiB on
# text dense with trigger words, not worth 8x the ceiling (docs/benchmarks.md).
CONTENT_PATTERN_MAX_MEM = 8 * 1024 * 1024
# Characters in one pattern: a rule is a few alternations; longer is a word list pasted in by
# mistake (50 patterns of this size per rule stay well under a megabyte of program).
CONTENT_PATTERN_MAX_CHARS = 4096


class Matcher(Protocol):
    """What the scan needs of a compiled pattern (RE2's and ``re``'s both fit)."""

    def search(self, text: str) -> object | None: ...


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = CONTENT_PATTERN_MAX_MEM
    # Errors are raised to the caller (with the rule's name), not printed by RE2 itself.
    options.log_errors = False
    return options


def compile_pattern(pattern: str) -> Matcher:
    """The pattern compiled for linear-time matching; ``ValueError`` saying why it cannot be."""
    if len(pattern) > CONTENT_PATTERN_MAX_CHARS:
        raise ValueError(f"a pattern is at most {CONTENT_PATTERN_MAX_CHARS} characters")
    try:
        compiled: Matcher = re2.compile(normalise(pattern), options=_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"pattern {pattern!r} is not a valid regular expression for the linear-time "
            f"engine (RE2): {reason} (RE2 refuses backreferences and lookaround, which can "
            "backtrack catastrophically, and programs over its memory bound)"
        ) from None
    return compiled


def compile_union(matchers: Sequence[Matcher]) -> Matcher | None:
    """One pattern that matches a text wherever any of ``matchers`` does (an unanchored
    alternation, each alternative in a group that parses as it does alone), or
    None when there is nothing to gain or it cannot be built (fewer than two patterns, a
    pattern not compiled here). The scan searches it first: a text none of the patterns
    matches (the common case) then costs one search instead of one per pattern."""
    if len(matchers) < 2 or not all(isinstance(m, re2._Regexp) for m in matchers):
        return None
    alternatives: list[str] = []
    for matcher in matchers:
        alternative = _alternative(matcher.pattern)  # type: ignore[attr-defined]
        if alternative is None:
            return None
        alternatives.append(alternative)
    try:
        compiled: Matcher = re2.compile("|".join(alternatives), options=_options())
    except re2.error:
        return None
    return compiled


def _alternative(pattern: str) -> str | None:
    """``pattern`` in a group of its own that parses exactly as the pattern alone, so that
    nothing of it reaches the alternatives beside it; None if there is no such group.

    A pattern that compiles alone and also does in ``(?:…)`` has its group closed by that
    ``)`` and its inline flags ended there. The one construct that would carry on past it is
    a quote left open (``\\Q…`` without ``\\E`` quotes to the end of the pattern): in the
    union it would quote the ``)|(?:`` after it and the next patterns up to some ``\\E``, and
    the rule would never match. Such a pattern has its quote closed first. (Only a pattern
    holding ``\\Q`` can end inside a quote: the others are not compiled again, which would
    also crowd RE2's cache of compiled patterns, the one body workers unpickle rules from.)
    """
    if "\\Q" not in pattern:
        return f"(?:{pattern})"
    for candidate in (f"(?:{pattern})", f"(?:{pattern}\\E)"):
        try:
            re2.compile(candidate, options=_options())
        except re2.error:
            continue
        return candidate
    return None
