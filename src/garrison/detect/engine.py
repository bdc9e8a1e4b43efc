"""The detection engine: every rule's detector over every observation, and deduplication.
Pure: observations, the directory view and the clock in; findings and verdicts out.

What the engine has learned (each detector's windows and baselines, the deduplication
times) exports as versioned JSON-able data (``state``) and comes back with ``restore``: the
detection worker stores it with its cursor, so a restart or a takeover continues the windows
instead of starting them again. A detector's state is taken back only by a detector of the
same rule id, kind and parameters (a changed rule starts afresh).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from garrison.detect.base import STATE_SUBJECTS_MAX, Facts, newest
from garrison.detect.detectors import build
from garrison.detect.observation import Finding, Obs
from garrison.detect.rules import Rule, RuleSet

# A finding for the same rule and subject within this long after the last one is the same
# alert happening again (its count grows), not a new alert.
DEDUP_WINDOW_S = 3600.0
# The version of ``state()``'s layout: a state of another version is not restored (the
# detectors start afresh, as on a first start) rather than misread.
STATE_VERSION = 1
# Deduplication times kept in exported state: the newest this many (alerts per hour across a
# deployment are far fewer; older entries only matter within ``DEDUP_WINDOW_S``).
DEDUP_STATE_MAX = 20_000


@dataclass(frozen=True, slots=True)
class Verdict:
    finding: Finding
    dedup_key: str
    new: bool  # a new alert (else a repeat of an open one)


class Dedup:
    """When each (rule, subject) last raised: a finding within ``DEDUP_WINDOW_S`` of the last
    one repeats that alert."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def judge(self, finding: Finding) -> Verdict:
        key = f"{finding.rule_id}|{finding.subject_kind}|{finding.subject_id}"
        last = self.last.get(key)
        new = last is None or finding.at - last > DEDUP_WINDOW_S
        # Findings can arrive late (catching up a gap): the window never moves backwards.
        self.last[key] = finding.at if last is None else max(last, finding.at)
        return Verdict(finding, key, new)

    def forget(self, dedup_key: str) -> None:
        self.last.pop(dedup_key, None)

    def state(self, limit: int = DEDUP_STATE_MAX) -> dict[str, float]:
        if not self.last:
            return {}
        horizon = max(self.last.values()) - DEDUP_WINDOW_S
        live = {k: t for k, t in self.last.items() if t >= horizon}
        return dict(newest(live, float, limit))

    def restore(self, state: dict[str, Any]) -> None:
        self.last = {str(k): float(t) for k, t in state.items()}


def fingerprint(rule: Rule) -> str:
    """Identifies a rule's detector and parameters (its state fits only the same)."""
    params = rule.params.model_dump() if hasattr(rule.params, "model_dump") else {}
    text = json.dumps([rule.detector, params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DetectionEngine:
    def __init__(self, ruleset: RuleSet, *, last_used: dict[str, float] | None = None) -> None:
        self.ruleset = ruleset
        self.detectors = [build(rule, last_used=last_used) for rule in ruleset.rules]
        self.dedup = Dedup()
        self.processed = 0

    def process(self, obs: Obs, facts: Facts) -> list[Finding]:
        self.processed += 1
        if not obs.name.startswith(("request.", "admin.")):
            return []  # calls and admin API calls; alerts, locks and the like are not read
        findings: list[Finding] = []
        for detector in self.detectors:
            found = detector.observe(obs, facts)
            if found:
                findings.extend(found)
        return findings

    def judge(self, finding: Finding) -> Verdict:
        return self.dedup.judge(finding)

    def forget(self, dedup_key: str) -> None:
        """An alert was resolved: the next finding for it is a new alert."""
        self.dedup.forget(dedup_key)

    # ── state ─────────────────────────────────────────────────────────────────────────────
    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        """Everything learned, JSON-able, at most ``limit`` subjects per detector."""
        return {
            "v": STATE_VERSION,
            "rules": {
                d.rule.id: {
                    "detector": d.rule.detector,
                    "fingerprint": fingerprint(d.rule),
                    "state": d.state(limit),
                }
                for d in self.detectors
            },
            "dedup": self.dedup.state(),
        }

    def restore(self, state: dict[str, Any]) -> list[str]:
        """Continue from ``state()`` (of this or an earlier engine); returns the rule ids whose
        state was taken back. Another version's state is ignored whole."""
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            return []
        saved = state.get("rules") or {}
        restored: list[str] = []
        for detector in self.detectors:
            entry = saved.get(detector.rule.id)
            if entry is None or entry.get("fingerprint") != fingerprint(detector.rule):
                continue
            detector.restore(entry.get("state") or {})
            restored.append(detector.rule.id)
        self.dedup.restore(state.get("dedup") or {})
        return restored
