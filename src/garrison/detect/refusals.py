"""Refused calls: a burst of them against one key or from one address, and any refusal for a
reason that needs a person (a policy that failed to evaluate).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from typing import Any

from garrison.detect import rules as r
from garrison.detect.base import (
    DENIALS,
    STATE_REFUSALS_MAX,
    STATE_SUBJECTS_MAX,
    Base,
    Facts,
    newest,
)
from garrison.detect.observation import Finding, Obs

# Reason codes of the refusal-burst detector's findings.
# ``threshold`` refusals within the window against one key (authenticated or presented).
REFUSALS_BURST = "refusals.burst"
# ``threshold`` unauthenticated refusals within the window from one address, whatever key
# ids it presented (key guessing with a fresh id each try, or no key at all).
REFUSALS_ADDRESS_BURST = "refusals.address_burst"


class RefusalBurst(Base):
    """``threshold`` refused calls within ``window`` from one key, or unauthenticated ones
    from one address.

    A refusal counts against the key it names. One that did not authenticate also counts
    against its source address: the key id it presented is the caller's own choice, and a
    guesser who makes up a fresh id for each try would otherwise never fill any window.
    Keys and addresses share one memory, bounded as ``_forget`` says. One finding per
    refusal: when its key and its address cross together, the key's (more specific) one."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.RefusalBurst = rule.params
        self.times: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in DENIALS or obs.status in (429, 503):
            return []
        subjects: list[tuple[str, str, str]] = []
        if obs.key:
            subjects.append(("credential", obs.key, REFUSALS_BURST))
        if obs.credential_id is None and obs.address is not None:
            subjects.append(("address", obs.address, REFUSALS_ADDRESS_BURST))
        if not subjects:
            return []
        horizon = obs.at - self.p.window
        found: list[Finding] = []
        for subject_kind, subject, reason in subjects:
            window = self.times[subject]
            window.append((obs.at, obs.index))
            while window and window[0][0] < horizon:
                window.popleft()
            if len(window) == self.p.threshold and not found:  # once per crossing
                finding = self.finding(
                    obs,
                    subject_kind,
                    subject,
                    reason,
                    evidence=tuple(i for _, i in window),
                    refusals=len(window),
                    address=obs.address,
                )
                if subject_kind == "address":
                    # The key ids an unauthenticated caller presented are its guesses, not a
                    # credential of its own: the finding names none (a playbook acting on it
                    # must not lock someone else's key).
                    finding = dataclasses.replace(finding, credential_id=None)
                found.append(finding)
        if len(self.times) > 2 * STATE_SUBJECTS_MAX:
            self._forget(horizon)
        return found

    def _forget(self, horizon: float) -> None:
        """Subjects refused by a spray of made-up keys or addresses, one refusal each, would
        be kept forever: drop those with nothing left in the window, then (a spray inside one
        window) all but the most recently refused, as ``state()`` keeps. Amortised: runs
        once the subjects have doubled past the bound."""
        live = {s: t for s, t in self.times.items() if t and t[-1][0] >= horizon}
        kept = newest(live, lambda times: times[-1][0], STATE_SUBJECTS_MAX)
        self.times = defaultdict(deque, kept)

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        active = {subject: times for subject, times in self.times.items() if times}
        return {
            subject: [list(ti) for ti in list(times)[-STATE_REFUSALS_MAX:]]
            for subject, times in newest(active, lambda times: times[-1][0], limit)
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.times = defaultdict(deque)
        for subject, times in state.items():
            self.times[subject] = deque((float(t), int(i)) for t, i in times)


class RefusalReason(Base):
    """Any refusal carrying one of ``reasons`` (e.g. ``policy.error``: a policy that failed to
    evaluate denied the call, and someone must look at the policy set)."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.reasons = frozenset(rule.params.reasons)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in DENIALS or not self.reasons.intersection(obs.reasons):
            return []
        hit = sorted(self.reasons.intersection(obs.reasons))
        subject = obs.principal_id or obs.key or obs.address or "-"
        return [self.finding(obs, "principal", subject, hit[0], reasons=hit, model=obs.model)]
