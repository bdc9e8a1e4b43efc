"""Issue 11 (low): custom content regexes cannot backtrack catastrophically. Patterns are
compiled for a linear-time engine (RE2); what needs backtracking (backreferences,
lookaround) is refused at load with an error naming the rule and the file; a pattern with
nested quantifiers runs in linear time on the input that makes ``re`` explode.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from garrison.detect.patterns import (
    CONTENT_PATTERN_MAX_CHARS,
    compile_pattern,
)
from garrison.detect.rules import RulesError, load_rules, parse_rules
from garrison.gateway.content import CONTENT_SCAN_CHUNK_CHARS, scan


def rules_file(tmp_path: Path, pattern: str) -> Path:
    path = tmp_path / "custom-rules.yaml"
    path.write_text(
        "rules:\n"
        "  - id: my-rule\n"
        "    title: Mine\n"
        "    level: low\n"
        "    detector: content\n"
        f"    patterns: ['{pattern}']\n"
    )
    return path


@pytest.mark.parametrize(
    "pattern",
    [r"(a+)\1", r"(?=ignore)ignore", r"(?!x)y", r"(?<=a)b", r"(?<!a)b", r"(?P<w>\w+) (?P=w)"],
)
def test_backtracking_features_are_refused_naming_rule_and_file(
    tmp_path: Path, pattern: str
) -> None:
    path = rules_file(tmp_path, pattern)
    with pytest.raises(RulesError) as refused:
        load_rules(path)
    message = str(refused.value)
    assert str(path) in message
    assert "rules[0] (my-rule)" in message and "patterns" in message
    assert "RE2" in message and "backtrack" in message


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|aa)+$", r"^(\w+\s?)*$", r"(.*a){12}$"])
def test_nested_quantifiers_run_in_linear_time(pattern: str) -> None:
    # Each of these takes `re` exponential time on "aaa…a!" (30 characters: minutes).
    rules = (("r", compile_pattern(pattern)),)
    hostile = "a" * (CONTENT_SCAN_CHUNK_CHARS - 1) + "!"
    started = time.perf_counter()
    assert scan(rules, {"prompt": hostile}) == []
    # Generous: linear matching of 64K characters takes milliseconds.
    assert time.perf_counter() - started < 5.0


def test_a_pattern_over_the_length_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        compile_pattern("a" * (CONTENT_PATTERN_MAX_CHARS + 1))
    assert compile_pattern("a" * CONTENT_PATTERN_MAX_CHARS).search("a" * 5000) is not None


def test_ordinary_custom_patterns_still_load_and_match() -> None:
    ruleset = parse_rules(
        """
rules:
  - id: secrets
    title: Secrets
    level: low
    detector: content
    patterns:
      - "(?i)\\\\bproject[- ]?zeta\\\\b"
      - "(?is)internal.{0,20}codename"
      - "[A-Z]{3}-\\\\d{4}"
"""
    )
    rules = tuple(ruleset.content_patterns())
    assert scan(rules, {"prompt": "tell me about Project Zeta"}) == ["secrets"]
    assert scan(rules, {"prompt": "the INTERNAL\nnew codename"}) == ["secrets"]
    assert scan(rules, {"prompt": "ticket ABC-1234"}) == ["secrets"]
    assert scan(rules, {"prompt": "nothing here"}) == []


def test_a_pattern_over_re2s_memory_bound_is_refused() -> None:
    # 300 bounded gaps of 999 any-characters: a program larger than CONTENT_PATTERN_MAX_MEM.
    pattern = "(?s)" + "a.{0,999}" * 300
    assert len(pattern) <= CONTENT_PATTERN_MAX_CHARS
    with pytest.raises(ValueError, match="pattern too large"):
        compile_pattern(pattern)
    assert compile_pattern("(?s)" + "a.{0,999}" * 3).search("a" * 10) is not None
