"""The rules file: which detectors run, with which thresholds and windows, and the playbooks
that act on what they find. YAML, Sigma-like, validated at load with errors that name the
rule and the field; an invalid file is refused whole (the previous rules stay in force).

    rules:
      - id: credential-multi-network
        title: One key used from several networks
        level: high                      # low | medium | high | critical
        detector: multi_network          # one of DETECTORS
        window: 10m                      # detector parameters (see each detector)
        min_networks: 2
        tags: [attack.t1078]
    playbooks:
      - id: contain-shared-key
        when: {rule: credential-multi-network}     # or {severity: critical}
        actions: [lock_credential, open_incident, notify]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from garrison.detect.observation import Severity
from garrison.detect.patterns import Matcher, compile_pattern
from garrison.domain.durations import parse_duration
from garrison.errors import BadRequest

# A rules file bigger than this is a mistake (hundreds of rules fit in a few KB).
RULES_MAX_BYTES = 512 * 1024
# Content patterns per rule: each runs over every prompt, in flight.
CONTENT_PATTERNS_MAX = 50

Action = Literal["lock_credential", "lock_principal", "lock_vendor", "open_incident", "notify"]


class RulesError(BadRequest):
    code = "invalid_rules"


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value)
    else:
        raise ValueError("a duration is a number of seconds or text like 10m, 1h, 30d")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a positive, finite number")
    return seconds


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(_Params):
    pass


class MultiNetwork(_Params):
    window: float = 600.0
    min_networks: int = Field(2, ge=2, le=100)
    prefix_v4: int = Field(24, ge=8, le=32)
    prefix_v6: int = Field(64, ge=16, le=128)

    _w = field_validator("window", mode="before")(_seconds)


class NewNetwork(_Params):
    prefix_v4: int = Field(24, ge=8, le=32)
    prefix_v6: int = Field(64, ge=16, le=128)
    learning_events: int = Field(20, ge=0, le=1_000_000)


class Volume(_Params):
    bucket: float = 60.0
    factor: float = Field(10.0, gt=1)
    min_calls: int = Field(30, ge=1)
    warmup_buckets: int = Field(5, ge=0)
    ewma_alpha: float = Field(0.1, gt=0, le=1)
    max_calls_per_bucket: int = Field(3000, ge=1)
    max_tokens_per_bucket: int = Field(2_000_000, ge=1)

    _b = field_validator("bucket", mode="before")(_seconds)


class RefusalBurst(_Params):
    window: float = 60.0
    threshold: int = Field(20, ge=2)

    _w = field_validator("window", mode="before")(_seconds)


class OffHours(_Params):
    learning_events: int = Field(200, ge=1)
    # Hours are learned over days, not only events: a busy principal's first morning
    # says nothing about its evenings.
    learning_span: float = 3 * 86400.0
    min_share: float = Field(0.01, gt=0, lt=1)

    _s = field_validator("learning_span", mode="before")(_seconds)


class Dormant(_Params):
    dormant: float = 30 * 86400.0

    _d = field_validator("dormant", mode="before")(_seconds)


class Content(_Params):
    patterns: list[str] = Field(min_length=1, max_length=CONTENT_PATTERNS_MAX)

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            compile_pattern(pattern)  # ValueError naming the pattern and what is wrong
        return value


class Extraction(_Params):
    bucket: float = 600.0
    calls_per_bucket: int = Field(500, ge=1)
    sustained_buckets: int = Field(3, ge=1)
    by: Literal["principal", "vendor"] = "principal"

    _b = field_validator("bucket", mode="before")(_seconds)


class RefusalReason(_Params):
    reasons: list[str] = Field(min_length=1, max_length=50)


class CertBinding(_Params):
    # One alert per key per window: a leaked bound key retried by its new holder is one
    # leak; an hour matches the alert deduplication (docs/concepts.md, "Alerts").
    window: float = 3600.0

    _w = field_validator("window", mode="before")(_seconds)


DETECTORS: Mapping[str, type[_Params]] = {
    "refusal_reason": RefusalReason,
    "cert_binding": CertBinding,
    "out_of_network": NoParams,
    "multi_network": MultiNetwork,
    "new_network": NewNetwork,
    "volume": Volume,
    "refusal_burst": RefusalBurst,
    "outside_contract": NoParams,
    "off_hours": OffHours,
    "dormant": Dormant,
    "canary": NoParams,
    "content": Content,
    "extraction": Extraction,
}


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    title: str = Field(min_length=1, max_length=200)
    level: str
    detector: str
    enabled: bool = True
    tags: list[str] = Field(default_factory=list, max_length=20)


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: str | None = None
    severity: str | None = None


class _PlaybookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    when: _When
    actions: list[Action] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    severity: Severity
    detector: str
    params: Any
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Playbook:
    id: str
    rule: str | None
    min_severity: Severity | None
    actions: tuple[str, ...]

    def matches(self, rule_id: str, severity: Severity) -> bool:
        if self.rule is not None and self.rule != rule_id:
            return False
        return self.min_severity is None or severity >= self.min_severity


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    playbooks: tuple[Playbook, ...] = ()
    source: str = "built-in"
    digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def content_patterns(self) -> list[tuple[str, Matcher]]:
        """(rule id, compiled pattern) of every content rule, for the gateway's in-flight scan:
        normalised like the text and compiled for linear-time matching (``patterns``)."""
        return [
            (rule.id, compile_pattern(pattern))
            for rule in self.rules
            if rule.detector == "content"
            for pattern in rule.params.patterns
        ]


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """Parse and validate a rules document; ``RulesError`` naming every problem found."""
    import hashlib

    if len(text.encode()) > RULES_MAX_BYTES:
        raise RulesError(f"{source}: over {RULES_MAX_BYTES // 1024} KiB")
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RulesError(f"{source}: expected a mapping with a list under 'rules'")
    unknown_top = set(doc) - {"rules", "playbooks"}
    if unknown_top:
        raise RulesError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown_top))}")
    problems: list[str] = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for n, raw in enumerate(doc["rules"]):
        label = f"rules[{n}]"
        if not isinstance(raw, dict):
            problems.append(f"{label}: a rule is a mapping")
            continue
        label = f"rules[{n}] ({raw.get('id', '?')})"
        try:
            spec = _RuleSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{label}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
            continue
        if spec.id in seen:
            problems.append(f"{label}: duplicate rule id")
        seen.add(spec.id)
        try:
            severity = Severity.parse(spec.level)
        except ValueError as exc:
            problems.append(f"{label}: level: {exc}")
            continue
        params_model = DETECTORS.get(spec.detector)
        if params_model is None:
            problems.append(
                f"{label}: unknown detector {spec.detector!r} "
                f"(known: {', '.join(sorted(DETECTORS))})"
            )
            continue
        try:
            params = params_model.model_validate(spec.model_extra or {})
        except ValidationError as exc:
            problems += [f"{label}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
            continue
        if spec.enabled:
            rules.append(
                Rule(spec.id, spec.title, severity, spec.detector, params, tuple(spec.tags))
            )
    playbooks: list[Playbook] = []
    raw_playbooks = doc.get("playbooks") or []
    if not isinstance(raw_playbooks, list):
        raise RulesError(f"{source}: 'playbooks' must be a list")
    for n, raw in enumerate(raw_playbooks):
        label = f"playbooks[{n}]"
        try:
            spec_p = _PlaybookSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{label}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
            continue
        if spec_p.when.rule is None and spec_p.when.severity is None:
            problems.append(f"{label}: 'when' needs a rule or a severity")
            continue
        if spec_p.when.rule is not None and spec_p.when.rule not in seen:
            problems.append(f"{label}: when.rule {spec_p.when.rule!r} is not a rule of this file")
            continue
        try:
            minimum = Severity.parse(spec_p.when.severity) if spec_p.when.severity else None
        except ValueError as exc:
            problems.append(f"{label}: when.severity: {exc}")
            continue
        playbooks.append(Playbook(spec_p.id, spec_p.when.rule, minimum, tuple(spec_p.actions)))
    if problems:
        raise RulesError(f"{source}: " + "; ".join(problems[:20]))
    return RuleSet(
        tuple(rules),
        tuple(playbooks),
        source=source,
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


DEFAULT_RULES_TEXT = resources.files("garrison.detect").joinpath("default_rules.yaml").read_text()


def load_rules(path: Path | None) -> RuleSet:
    if path is None:
        return parse_rules(DEFAULT_RULES_TEXT, "built-in rules")
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"{path}: {exc}") from None
    return parse_rules(text, str(path))
