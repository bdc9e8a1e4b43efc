"""The detection engine: every rule's detector over every observation, and deduplication.
Pure: observations, the directory view and the clock in; findings and verdicts out.
"""

from __future__ import annotations

from dataclasses import dataclass

from garrison.detect import detectors
from garrison.detect.observation import Finding, Obs
from garrison.detect.rules import RuleSet

# A finding for the same rule and subject within this long after the last one is the same
# alert happening again (its count grows), not a new alert.
DEDUP_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    finding: Finding
    dedup_key: str
    new: bool  # a new alert (else a repeat of an open one)


class DetectionEngine:
    def __init__(self, ruleset: RuleSet, *, last_used: dict[str, float] | None = None) -> None:
        self.ruleset = ruleset
        self.detectors = [detectors.build(rule, last_used=last_used) for rule in ruleset.rules]
        self._last_alert: dict[str, float] = {}
        self.processed = 0

    def process(self, obs: Obs, facts: detectors.Facts) -> list[Finding]:
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
        key = f"{finding.rule_id}|{finding.subject_kind}|{finding.subject_id}"
        last = self._last_alert.get(key)
        new = last is None or finding.at - last > DEDUP_WINDOW_S
        # Findings can arrive late (catching up a gap): the window never moves backwards.
        self._last_alert[key] = finding.at if last is None else max(last, finding.at)
        return Verdict(finding, key, new)

    def forget(self, dedup_key: str) -> None:
        """An alert was resolved: the next finding for it is a new alert."""
        self._last_alert.pop(dedup_key, None)
