"""What is asked of a model: prompts matching a rule's patterns, and sustained systematic
querying of one model (extraction).
"""

from __future__ import annotations

from typing import Any

from garrison.audit.events import EventName
from garrison.detect import rules as r
from garrison.detect.base import STATE_SUBJECTS_MAX, Base, Facts, newest
from garrison.detect.observation import Finding, Obs


class Content(Base):
    """The gateway matched this rule's patterns against the prompt in flight."""

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != EventName.REQUEST_ALLOWED or self.rule.id not in obs.content_flags:
            return []
        return [
            self.finding(
                obs, "principal", obs.principal_id or "-", "prompt.content", model=obs.model
            )
        ]


class Extraction(Base):
    """``calls_per_bucket`` calls to one model for ``sustained_buckets`` buckets in a row by
    one principal (or vendor): systematic querying."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.Extraction = rule.params
        # (subject, model) → [bucket start, calls, consecutive full buckets, fired]
        self.state_of: dict[tuple[str, str], list[Any]] = {}

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != EventName.REQUEST_ALLOWED or obs.model is None:
            return []
        subject = obs.principal_id if self.p.by == "principal" else obs.org_id
        if subject is None:
            return []
        start = obs.at - (obs.at % self.p.bucket)
        st = self.state_of.get((subject, obs.model))
        if st is None:
            st = [start, 0, 0, False]
            self.state_of[(subject, obs.model)] = st
        elif st[0] != start:
            full = st[1] >= self.p.calls_per_bucket
            adjacent = start - st[0] <= self.p.bucket
            st[2] = st[2] + 1 if full and adjacent else 0
            st[0], st[1] = start, 0
        st[1] += 1
        if st[1] != self.p.calls_per_bucket or st[2] + 1 < self.p.sustained_buckets:
            return []
        return [
            self.finding(
                obs,
                self.p.by,
                subject,
                "model.extraction",
                model=obs.model,
                buckets=st[2] + 1,
                calls_per_bucket=st[1],
            )
        ]

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        kept = newest(self.state_of, lambda st: float(st[0]), limit)
        return {"pairs": [[subject, model, *st] for (subject, model), st in kept]}

    def restore(self, state: dict[str, Any]) -> None:
        self.state_of = {}
        for subject, model, start, calls, run, fired in state.get("pairs", []):
            self.state_of[(str(subject), str(model))] = [
                float(start),
                int(calls),
                int(run),
                bool(fired),
            ]
