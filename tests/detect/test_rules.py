"""Tests for ``garrison.detect.rules``: the built-in rules load, and every kind of mistake in
a rules file is refused whole with a message that names the rule (or playbook) and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from garrison.detect import rules as r
from garrison.detect.observation import Severity
from garrison.detect.rules import (
    DEFAULT_RULES_TEXT,
    DETECTORS,
    RULES_MAX_BYTES,
    Playbook,
    RulesError,
    load_rules,
    parse_rules,
)
from garrison.errors import BadRequest


def rule(rule_id: str = "r1", detector: str = "canary", **fields: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "title": f"rule {rule_id}",
        "level": "medium",
        "detector": detector,
        **fields,
    }


def doc(*rules: dict[str, Any], playbooks: list[Any] | None = None) -> str:
    body: dict[str, Any] = {"rules": list(rules)}
    if playbooks is not None:
        body["playbooks"] = playbooks
    return yaml.safe_dump(body, sort_keys=False)


def refused(text: str, source: str = "my-rules.yaml") -> str:
    with pytest.raises(RulesError) as info:
        parse_rules(text, source)
    message = info.value.detail
    assert message.startswith(f"{source}: ")
    return message


# ── the built-in rules ────────────────────────────────────────────────────────────────────
def test_builtin_rules_load() -> None:
    rs = load_rules(None)
    assert rs.source == "built-in rules"
    assert len(rs.digest) == 64
    ids = [x.id for x in rs.rules]
    assert len(ids) == len(set(ids))
    # Every detector is used by at least one built-in rule.
    assert {x.detector for x in rs.rules} == set(DETECTORS)
    by_id = {x.id: x for x in rs.rules}
    assert by_id["canary-key-used"].severity is Severity.CRITICAL
    assert by_id["key-multi-network"].params.window == 600.0
    assert by_id["key-dormant-used"].params.dormant == 30 * 86400.0
    assert by_id["principal-volume"].params.bucket == 60.0
    assert by_id["model-extraction"].params.bucket == 600.0
    assert {p.id for p in rs.playbooks} == {"contain-canary", "contain-shared-key", "notify-high"}
    for pb in rs.playbooks:
        assert pb.rule is None or pb.rule in by_id


def test_builtin_rules_file_is_the_packaged_one() -> None:
    on_disk = (Path(r.__file__).parent / "default_rules.yaml").read_text()
    assert on_disk == DEFAULT_RULES_TEXT
    assert parse_rules(on_disk).digest == load_rules(None).digest


def test_builtin_content_patterns_compile_and_are_named() -> None:
    patterns = load_rules(None).content_patterns()
    assert {rid for rid, _ in patterns} == {
        "prompt-high-risk-capability",
        "prompt-system-extraction",
    }
    assert len(patterns) == 5
    assert all(callable(p.search) for _, p in patterns)


def test_load_rules_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(doc(rule("only-one")))
    rs = load_rules(path)
    assert rs.source == str(path) and [x.id for x in rs.rules] == ["only-one"]


def test_load_rules_from_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RulesError, match=re.escape(str(path))):
        load_rules(path)


def test_rules_error_is_a_bad_request() -> None:
    assert issubclass(RulesError, BadRequest)
    assert RulesError.code == "invalid_rules"


def test_empty_rule_list_is_valid() -> None:
    rs = parse_rules("rules: []\n")
    assert rs.rules == () and rs.playbooks == ()


def test_digest_tracks_the_text() -> None:
    a = parse_rules(doc(rule("a")))
    b = parse_rules(doc(rule("a")) + "# a comment\n")
    assert a.rules == b.rules and a.digest != b.digest


# ── parameters ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (2.5, 2.5),
        ("45s", 45.0),
        ("10m", 600.0),
        ("1.5h", 5400.0),
        ("30d", 30 * 86400.0),
        ("2w", 14 * 86400.0),
        (" 10m ", 600.0),
    ],
)
def test_durations_as_numbers_or_text(value: Any, seconds: float) -> None:
    rs = parse_rules(doc(rule("mn", "multi_network", window=value)))
    assert rs.rules[0].params.window == seconds


def test_parameters_default_when_absent() -> None:
    rs = parse_rules(doc(rule("v", "volume")))
    p = rs.rules[0].params
    assert (p.bucket, p.factor, p.min_calls, p.warmup_buckets) == (60.0, 10.0, 30, 5)


def test_level_is_case_insensitive() -> None:
    rs = parse_rules(doc(rule("a", level="CRITICAL"), rule("b", level=" Low ")))
    assert [x.severity for x in rs.rules] == [Severity.CRITICAL, Severity.LOW]


def test_disabled_rules_are_skipped_but_still_validated() -> None:
    rs = parse_rules(doc(rule("on"), rule("off", enabled=False)))
    assert [x.id for x in rs.rules] == ["on"]
    message = refused(doc(rule("off", "volume", enabled=False, factor=0.5)))
    assert "rules[0] (off)" in message and "factor" in message


def test_a_playbook_may_name_a_disabled_rule() -> None:
    pb = {"id": "p", "when": {"rule": "off"}, "actions": ["notify"]}
    rs = parse_rules(doc(rule("off", enabled=False), playbooks=[pb]))
    assert rs.rules == () and rs.playbooks == (Playbook("p", "off", None, ("notify",)),)


def test_tags_are_kept() -> None:
    rs = parse_rules(doc(rule("a", tags=["attack.t1078", "x"])))
    assert rs.rules[0].tags == ("attack.t1078", "x")


def test_playbooks_parse_and_match() -> None:
    playbooks = [
        {"id": "by-rule", "when": {"rule": "a"}, "actions": ["lock_credential", "open_incident"]},
        {"id": "by-severity", "when": {"severity": "high"}, "actions": ["notify"]},
        {"id": "both", "when": {"rule": "a", "severity": "critical"}, "actions": ["lock_vendor"]},
    ]
    rs = parse_rules(doc(rule("a"), rule("b"), playbooks=playbooks))
    by_rule, by_severity, both = rs.playbooks
    assert by_rule.actions == ("lock_credential", "open_incident")
    assert by_rule.matches("a", Severity.LOW) and not by_rule.matches("b", Severity.CRITICAL)
    assert by_severity.matches("b", Severity.HIGH) and by_severity.matches("b", Severity.CRITICAL)
    assert not by_severity.matches("b", Severity.MEDIUM)
    assert both.matches("a", Severity.CRITICAL) and not both.matches("a", Severity.HIGH)
    assert not both.matches("b", Severity.CRITICAL)


def test_content_patterns_of_every_content_rule() -> None:
    rs = parse_rules(
        doc(
            rule("c1", "content", patterns=["alpha", "(?i)beta"]),
            rule("c2", "content", patterns=["gamma"]),
            rule("c3", "content", patterns=["off"], enabled=False),
            rule("other", "volume"),
        )
    )
    got = [(rid, p.pattern) for rid, p in rs.content_patterns()]  # type: ignore[attr-defined]
    assert got == [("c1", "alpha"), ("c1", "(?i)beta"), ("c2", "gamma")]
    assert parse_rules(doc(rule("v", "volume"))).content_patterns() == []


# ── every kind of mistake ─────────────────────────────────────────────────────────────────
def test_unknown_detector() -> None:
    message = refused(doc(rule("r1", "volume"), rule("sneaky", "telepathy")))
    assert "rules[1] (sneaky)" in message
    assert "unknown detector 'telepathy'" in message
    assert "multi_network" in message  # lists the known ones


def test_unknown_parameter() -> None:
    message = refused(doc(rule("mn", "multi_network", windw="10m")))
    assert "rules[0] (mn)" in message and "windw" in message


def test_parameter_of_another_detector() -> None:
    message = refused(doc(rule("c", "canary", window="10m")))
    assert "rules[0] (c)" in message and "window" in message


@pytest.mark.parametrize("value", ["ten minutes", "10", "10y", "-5m", "0s", 0, -3, True, [10]])
def test_bad_duration(value: Any) -> None:
    message = refused(doc(rule("mn", "multi_network", window=value)))
    assert "rules[0] (mn)" in message and "window" in message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_durations_are_refused(value: str) -> None:
    # `bucket: .nan` in YAML is a float NaN. The text path refuses non-finite durations
    # (parse_duration); the number path must too: a NaN bucket makes the volume detector
    # raise on the second call of every principal, and a NaN window never expires anything.
    text = doc(rule("v", "volume")).replace(
        "detector: volume", f"detector: volume\n  bucket: {value}"
    )
    assert yaml.safe_load(text)["rules"][0]["bucket"] != 60  # the YAML says what we mean
    message = refused(text)
    assert "rules[0] (v)" in message and "bucket" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_networks", 1),
        ("prefix_v4", 33),
        ("prefix_v6", 8),
        ("min_networks", "two"),
    ],
)
def test_out_of_range_parameter(field: str, value: Any) -> None:
    message = refused(doc(rule("mn", "multi_network", **{field: value})))
    assert "rules[0] (mn)" in message and field in message


@pytest.mark.parametrize(
    ("detector", "field", "value"),
    [
        ("volume", "factor", 1),
        ("volume", "ewma_alpha", 0),
        ("volume", "max_calls_per_bucket", 0),
        ("refusal_burst", "threshold", 1),
        ("off_hours", "min_share", 1.5),
        ("off_hours", "learning_events", 0),
        ("extraction", "by", "planet"),
        ("extraction", "sustained_buckets", 0),
        ("new_network", "learning_events", -1),
        ("dormant", "dormant", "forever"),
    ],
)
def test_out_of_range_parameter_of_each_detector(detector: str, field: str, value: Any) -> None:
    message = refused(doc(rule("x", detector, **{field: value})))
    assert "rules[0] (x)" in message and field in message


@pytest.mark.parametrize("level", ["severe", "", "3"])
def test_bad_level(level: str) -> None:
    message = refused(doc(rule("lv", level=level)))
    assert "rules[0] (lv)" in message and "level" in message


def test_level_of_the_wrong_type() -> None:
    message = refused(doc(rule("lv", level=3)))
    assert "rules[0] (lv)" in message and "level" in message


def test_duplicate_id() -> None:
    message = refused(doc(rule("same"), rule("other"), rule("same", "volume")))
    assert "rules[2] (same): duplicate rule id" in message
    assert "rules[0]" not in message


def test_invalid_regex() -> None:
    message = refused(doc(rule("ct", "content", patterns=["fine", "(unclosed"])))
    assert "rules[0] (ct)" in message and "patterns" in message
    assert "'(unclosed'" in message and "not a valid regular expression" in message


@pytest.mark.parametrize(
    "patterns", [[], "just-a-string", [f"p{i}" for i in range(r.CONTENT_PATTERNS_MAX + 1)]]
)
def test_content_patterns_shape(patterns: Any) -> None:
    message = refused(doc(rule("ct", "content", patterns=patterns)))
    assert "rules[0] (ct)" in message and "patterns" in message


def test_content_rule_needs_patterns() -> None:
    message = refused(doc(rule("ct", "content")))
    assert "rules[0] (ct)" in message and "patterns" in message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "Upper-Case"}, "id"),
        ({"id": "-leading-dash"}, "id"),
        ({"title": ""}, "title"),
        ({"title": None}, "title"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"tags": "not-a-list"}, "tags"),
    ],
)
def test_bad_rule_fields(fields: dict[str, Any], field: str) -> None:
    message = refused(doc(rule("r1", **fields)))
    assert "rules[0]" in message and f": {field}: " in message


@pytest.mark.parametrize("missing", ["id", "title", "level", "detector"])
def test_missing_rule_field(missing: str) -> None:
    raw = rule("r1")
    del raw[missing]
    message = refused(doc(raw))
    assert "rules[0]" in message and missing in message


def test_a_rule_that_is_not_a_mapping() -> None:
    message = refused("rules:\n  - just a string\n")
    assert "rules[0]: a rule is a mapping" in message


def test_playbook_naming_an_unknown_rule() -> None:
    pb = {"id": "p", "when": {"rule": "ghost"}, "actions": ["notify"]}
    message = refused(doc(rule("real"), playbooks=[pb]))
    assert "playbooks[0]" in message and "when.rule 'ghost'" in message


@pytest.mark.parametrize("when", [{}, {"rule": None, "severity": None}])
def test_playbook_with_an_empty_when(when: dict[str, Any]) -> None:
    pb = {"id": "p", "when": when, "actions": ["notify"]}
    message = refused(doc(rule("a"), playbooks=[pb]))
    assert "playbooks[0]" in message and "'when' needs a rule or a severity" in message


def test_playbook_with_a_bad_severity() -> None:
    pb = {"id": "p", "when": {"severity": "urgent"}, "actions": ["notify"]}
    message = refused(doc(rule("a"), playbooks=[pb]))
    assert "playbooks[0]" in message and "when.severity" in message


def test_playbook_with_an_unknown_when_key() -> None:
    pb = {"id": "p", "when": {"rule": "a", "detector": "canary"}, "actions": ["notify"]}
    message = refused(doc(rule("a"), playbooks=[pb]))
    assert "playbooks[0]" in message and "when.detector" in message


@pytest.mark.parametrize("actions", [["notify", "delete_everything"], [], "notify"])
def test_playbook_with_a_bad_action(actions: Any) -> None:
    pb = {"id": "p", "when": {"rule": "a"}, "actions": actions}
    message = refused(doc(rule("a"), playbooks=[pb]))
    assert "playbooks[0]" in message and "actions" in message


def test_unknown_action_is_named() -> None:
    pb = {"id": "p", "when": {"rule": "a"}, "actions": ["notify", "delete_everything"]}
    message = refused(doc(rule("a"), playbooks=[pb]))
    assert "actions.1" in message


def test_playbook_that_is_not_a_mapping() -> None:
    message = refused(doc(rule("a"), playbooks=["notify everyone"]))
    assert "playbooks[0]" in message


@pytest.mark.parametrize(
    "text",
    [
        "rules: [unclosed\n",
        "rules:\n  - id: a\n   title: bad indent\n",
        "rules: {a: 1, a: }\n  -\n",
        "\tclear: tab\n",
    ],
)
def test_not_yaml(text: str) -> None:
    assert "not valid YAML" in refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "just text\n",
        "- a\n- list\n",
        "rules: {canary: {level: high}}\n",
        "rules: canary\n",
        "playbooks: []\n",
        "42\n",
    ],
)
def test_wrong_top_level_shape(text: str) -> None:
    assert "expected a mapping with a list under 'rules'" in refused(text)


def test_unknown_top_level_key() -> None:
    message = refused(doc(rule("a")) + "rulez: []\nextra: 1\n")
    assert "unknown top-level key(s) extra, rulez" in message


@pytest.mark.parametrize("value", ["5", "true", "some text", "{p: {when: {rule: a}}}"])
def test_playbooks_of_the_wrong_shape(value: str) -> None:
    # `playbooks` must be a list: anything else is a RulesError like every other mistake
    # (not a TypeError from iterating over an int, nor a list of letters).
    message = refused(doc(rule("a")) + f"playbooks: {value}\n")
    assert "playbooks" in message


def test_deeply_nested_yaml_is_refused_not_a_crash() -> None:
    # Well under the size limit, but nested deeper than the YAML composer can recurse.
    depth = 20_000
    text = "rules: " + "[" * depth + "]" * depth + "\n"
    assert len(text.encode()) < RULES_MAX_BYTES
    refused(text)


def test_oversize() -> None:
    padding = "# " + "x" * 1000 + "\n"
    text = doc(rule("a")) + padding * (RULES_MAX_BYTES // len(padding) + 1)
    assert len(text.encode()) > RULES_MAX_BYTES
    assert f"over {RULES_MAX_BYTES // 1024} KiB" in refused(text)


def test_at_the_size_limit_is_fine() -> None:
    head = doc(rule("a"))
    text = head + "#" * (RULES_MAX_BYTES - len(head.encode()) - 1) + "\n"
    assert len(text.encode()) == RULES_MAX_BYTES
    assert [x.id for x in parse_rules(text).rules] == ["a"]


def test_size_is_counted_in_bytes() -> None:
    head = doc(rule("a"))
    text = head + "# " + "é" * ((RULES_MAX_BYTES - len(head)) // 2 + 10) + "\n"
    assert len(text) < RULES_MAX_BYTES < len(text.encode())
    assert "KiB" in refused(text)


def test_every_problem_is_named_at_once() -> None:
    pb = {"id": "p", "when": {"rule": "ghost"}, "actions": ["notify"]}
    text = doc(
        rule("a", "telepathy"),
        rule("b", level="severe"),
        rule("c", "volume", factor=0),
        rule("d", "multi_network", window="soon"),
        playbooks=[pb],
    )
    message = refused(text)
    for part in ("rules[0] (a)", "rules[1] (b)", "rules[2] (c)", "rules[3] (d)", "playbooks[0]"):
        assert part in message
    assert message.count(";") >= 4


def test_problems_are_capped_at_twenty() -> None:
    text = doc(*(rule(f"r{i}", "telepathy") for i in range(30)))
    message = refused(text)
    assert "rules[19] (r19)" in message and "rules[20]" not in message
