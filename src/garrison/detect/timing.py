"""When a call happens: outside a vendor's contract, in a principal's unusual hours, or on a
key idle for long.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from garrison.audit.events import EventName
from garrison.detect import rules as r
from garrison.detect.base import STATE_SUBJECTS_MAX, Base, Facts, newest
from garrison.detect.observation import Finding, Obs
from garrison.domain import PrincipalKind


class OutsideContract(Base):
    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != EventName.REQUEST_DENIED or "vendor.outside_contract" not in obs.reasons:
            return []
        return [
            self.finding(
                obs, "credential", obs.key or "-", "vendor.outside_contract", org_id=obs.org_id
            )
        ]


class OffHours(Base):
    """A call in an hour (UTC) that holds under ``min_share`` of the principal's learned use."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.OffHours = rule.params
        self.hours: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
        self.first_seen: dict[str, float] = {}

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != EventName.REQUEST_ALLOWED or obs.principal_id is None:
            return []
        principal = facts.principals.get(obs.principal_id)
        if principal is not None and principal.kind is PrincipalKind.SERVICE:
            return []  # programs keep no office hours
        hist = self.hours[obs.principal_id]
        first = self.first_seen.setdefault(obs.principal_id, obs.at)
        total = sum(hist)
        hour = time.gmtime(obs.at).tm_hour
        learned = total >= self.p.learning_events and obs.at - first >= self.p.learning_span
        unusual = learned and hist[hour] / total < self.p.min_share
        hist[hour] += 1
        if not unusual:
            return []
        return [self.finding(obs, "principal", obs.principal_id, "principal.off_hours", hour=hour)]

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        # Recency is not kept per principal here: the most used principals are kept.
        busiest = newest(self.hours, lambda hist: float(sum(hist)), limit)
        return {who: [hist, self.first_seen.get(who)] for who, hist in busiest}

    def restore(self, state: dict[str, Any]) -> None:
        self.hours, self.first_seen = defaultdict(lambda: [0] * 24), {}
        for who, (hist, first) in state.items():
            if len(hist) == 24:
                self.hours[who] = [int(n) for n in hist]
            if first is not None:
                self.first_seen[who] = float(first)


class Dormant(Base):
    """A key whose last use (or creation) is older than ``dormant`` is used again."""

    def __init__(self, rule: r.Rule, last_used: dict[str, float] | None = None) -> None:
        super().__init__(rule)
        self.p: r.Dormant = rule.params
        self.last: dict[str, float] = dict(last_used or {})

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != EventName.REQUEST_ALLOWED or obs.credential_id is None:
            return []
        key = obs.credential_id
        previous = self.last.get(key)
        self.last[key] = obs.at
        if previous is None:
            credential = facts.credentials.get(key)
            if credential is None:
                return []
            previous = credential.created_at
        idle = obs.at - previous
        if idle < self.p.dormant:
            return []
        return [
            self.finding(
                obs, "credential", key, "credential.dormant", idle_days=round(idle / 86400, 1)
            )
        ]

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        return dict(newest(self.last, float, limit))

    def restore(self, state: dict[str, Any]) -> None:
        self.last = {str(key): float(at) for key, at in state.items()}
