"""How much a principal calls: calls or tokens per bucket far above its own baseline."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from garrison.audit.events import EventName
from garrison.detect import rules as r
from garrison.detect.base import STATE_SUBJECTS_MAX, Base, Facts, newest
from garrison.detect.observation import Finding, Obs


class Volume(Base):
    """Calls or tokens per principal per bucket far above its own EWMA baseline, or above an
    absolute ceiling. Fires as soon as the current bucket crosses the line (once a bucket)."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.Volume = rule.params
        # principal → [bucket start, calls, tokens, fired]
        self.current: dict[str, list[Any]] = {}
        self.baseline: dict[str, float] = {}
        self.buckets_seen: dict[str, int] = defaultdict(int)

    def _roll(self, who: str, start: float) -> list[Any]:
        cur = self.current.get(who)
        if cur is None or cur[0] != start:
            if cur is not None:
                # Close the finished bucket (and any empty ones between) into the baseline.
                gaps = max(0, int((start - cur[0]) / self.p.bucket) - 1)
                base = self.baseline.get(who)
                a = self.p.ewma_alpha
                base = cur[1] if base is None else a * cur[1] + (1 - a) * base
                for _ in range(min(gaps, 100)):
                    base = (1 - a) * base
                self.baseline[who] = base
                self.buckets_seen[who] += 1 + gaps
            cur = [start, 0, 0, False]
            self.current[who] = cur
        return cur

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        who = obs.principal_id
        if who is None or obs.name not in (EventName.REQUEST_ALLOWED, EventName.REQUEST_COMPLETED):
            return []
        start = obs.at - (obs.at % self.p.bucket)
        cur = self._roll(who, start)
        if obs.name == EventName.REQUEST_ALLOWED:
            cur[1] += 1
        else:
            cur[2] += obs.tokens_in + obs.tokens_out
        if cur[3]:
            return []
        base = self.baseline.get(who, 0.0)
        warm = self.buckets_seen[who] >= self.p.warmup_buckets
        over_ceiling = cur[1] > self.p.max_calls_per_bucket or cur[2] > self.p.max_tokens_per_bucket
        over_baseline = (
            warm and cur[1] >= self.p.min_calls and cur[1] > self.p.factor * max(base, 1.0)
        )
        if not (over_ceiling or over_baseline):
            return []
        cur[3] = True
        return [
            self.finding(
                obs,
                "principal",
                who,
                "principal.volume",
                calls=cur[1],
                tokens=cur[2],
                baseline=round(base, 2),
                ceiling=over_ceiling,
            )
        ]

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        return {
            who: [cur, self.baseline.get(who), self.buckets_seen[who]]
            for who, cur in newest(self.current, lambda cur: float(cur[0]), limit)
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.current, self.baseline, self.buckets_seen = {}, {}, defaultdict(int)
        for who, (cur, base, seen) in state.items():
            start, calls, tokens, fired = cur
            self.current[who] = [float(start), int(calls), int(tokens), bool(fired)]
            if base is not None:
                self.baseline[who] = float(base)
            self.buckets_seen[who] = int(seen)
