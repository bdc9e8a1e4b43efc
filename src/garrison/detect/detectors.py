"""The built-in detectors. Each is pure: observations and the clock in, findings out; its
state (windows, baselines) lives in the instance; thresholds and windows come from its rule.

``Facts`` is the read-only directory view a detector may consult (is this key a canary,
when was it created, which org is a principal in): only the credentials and principals, so
the gateway's current snapshot satisfies it, and so does any object holding those two maps.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from garrison.detect import rules as r
from garrison.detect.observation import Finding, Obs, network_of
from garrison.domain import Credential, Principal, PrincipalKind


class Facts(Protocol):
    """The directory facts detectors read (a ``garrison.domain.snapshot.Snapshot`` has them)."""

    @property
    def credentials(self) -> Mapping[str, Credential]: ...

    @property
    def principals(self) -> Mapping[str, Principal]: ...


# Evidence indices kept per finding: enough to point an investigator at the events.
EVIDENCE_MAX = 20
# Refusals on the data plane and on the admin API (key guessing there counts as much).
_DENIALS = frozenset({"request.denied", "admin.denied"})
_NETWORK_REASONS = frozenset({"credential.network_not_allowed", "vendor.network_not_allowed"})

# Exported state (``state()``, stored by the detection worker with its cursor) is bounded:
# each detector keeps its most recently active subjects, at most this many — a deployment's
# active keys and people in one window are far fewer, and the bound caps the stored blob
# (~100 bytes a subject) whatever an attacker sprays.
STATE_SUBJECTS_MAX = 20_000
# Networks kept per key or principal in exported state: ``min_networks`` is at most 100, so
# a key's newest 100 networks decide every multi-network finding; a principal's known
# networks beyond this are forgotten oldest-first (at worst one late new-network alert).
STATE_NETWORKS_MAX = 100
# Refusal times kept per subject in exported state: a burst fires when the window holds
# ``threshold`` refusals, and thresholds above this are not meaningful.
STATE_REFUSALS_MAX = 1000

K = TypeVar("K")
V = TypeVar("V")


def newest(items: Mapping[K, V], when: Callable[[V], float], limit: int) -> Iterable[tuple[K, V]]:
    """The ``limit`` items most recently active (``when``), or all of them if fewer."""
    if len(items) <= limit:
        return items.items()
    return heapq.nlargest(limit, items.items(), key=lambda kv: when(kv[1]))


class Detector(Protocol):
    rule: r.Rule

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]: ...

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class _Base:
    def __init__(self, rule: r.Rule) -> None:
        self.rule = rule

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        """What this detector has learned, as JSON-able data (at most ``limit`` subjects);
        ``restore`` takes it back. Stateless detectors have nothing to keep."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state()`` of a detector of the same rule (replaces what is held)."""

    def finding(
        self,
        obs: Obs,
        subject_kind: str,
        subject_id: str,
        reason: str,
        *,
        evidence: tuple[int, ...] | None = None,
        **data: Any,
    ) -> Finding:
        return Finding(
            rule_id=self.rule.id,
            title=self.rule.title,
            severity=self.rule.severity,
            subject_kind=subject_kind,
            subject_id=subject_id,
            reason=reason,
            at=obs.at,
            evidence=(evidence if evidence is not None else (obs.index,))[-EVIDENCE_MAX:],
            data=data,
            principal_id=obs.principal_id,
            org_id=obs.org_id,
            credential_id=obs.key,
        )


class Canary(_Base):
    """Any use of a canary key — authenticated or not — is an attack."""

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        key = obs.key
        if key is None or not obs.name.startswith(("request.", "admin.")):
            return []
        credential = facts.credentials.get(key)
        if credential is None or not credential.canary:
            return []
        return [self.finding(obs, "credential", key, "credential.canary", address=obs.address)]


class OutOfNetwork(_Base):
    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in _DENIALS or not _NETWORK_REASONS.intersection(obs.reasons):
            return []
        subject = obs.key or obs.address or "-"
        return [
            self.finding(
                obs, "credential", subject, "credential.out_of_network", address=obs.address
            )
        ]


class MultiNetwork(_Base):
    """One key used (successfully) from ``min_networks`` networks within ``window``."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.MultiNetwork = rule.params
        # key → network → (last seen, last index)
        self.seen: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.allowed" or obs.credential_id is None or obs.address is None:
            return []
        net = network_of(obs.address, self.p.prefix_v4, self.p.prefix_v6)
        if net is None:
            return []
        nets = self.seen[obs.credential_id]
        horizon = obs.at - self.p.window
        for old in [n for n, (t, _) in nets.items() if t < horizon]:
            del nets[old]
        is_new = net not in nets
        nets[net] = (obs.at, obs.index)
        if not is_new or len(nets) < self.p.min_networks:
            return []
        return [
            self.finding(
                obs,
                "credential",
                obs.credential_id,
                "credential.multi_network",
                evidence=tuple(sorted(i for _, i in nets.values())),
                networks=sorted(nets),
            )
        ]

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        keys = newest(self.seen, lambda nets: max((t for t, _ in nets.values()), default=0), limit)
        return {
            key: [[net, t, i] for net, (t, i) in newest(nets, lambda ti: ti[0], STATE_NETWORKS_MAX)]
            for key, nets in keys
            if nets
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = defaultdict(dict)
        for key, nets in state.items():
            self.seen[key] = {str(net): (float(t), int(i)) for net, t, i in nets}


class NewNetwork(_Base):
    """A principal's first call from a network not seen for it (after a learning period)."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.NewNetwork = rule.params
        self.networks: dict[str, set[str]] = defaultdict(set)
        self.events: dict[str, int] = defaultdict(int)
        self.last_at: dict[str, float] = {}  # principal → its last call (state bounds)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.allowed" or obs.principal_id is None or obs.address is None:
            return []
        net = network_of(obs.address, self.p.prefix_v4, self.p.prefix_v6)
        if net is None:
            return []
        known = self.networks[obs.principal_id]
        self.events[obs.principal_id] += 1
        self.last_at[obs.principal_id] = obs.at
        if net in known:
            return []
        known.add(net)
        if self.events[obs.principal_id] <= self.p.learning_events or len(known) == 1:
            return []
        return [
            self.finding(obs, "principal", obs.principal_id, "principal.new_network", network=net)
        ]

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        return {
            who: [self.events[who], at, sorted(self.networks[who])[:STATE_NETWORKS_MAX]]
            for who, at in newest(self.last_at, float, limit)
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.networks, self.events, self.last_at = defaultdict(set), defaultdict(int), {}
        for who, (events, at, networks) in state.items():
            self.events[who] = int(events)
            self.last_at[who] = float(at)
            self.networks[who] = {str(n) for n in networks}


class Volume(_Base):
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
        if who is None or obs.name not in ("request.allowed", "request.completed"):
            return []
        start = obs.at - (obs.at % self.p.bucket)
        cur = self._roll(who, start)
        if obs.name == "request.allowed":
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


# Reason codes of the refusal-burst detector's findings.
# ``threshold`` refusals within the window against one key (authenticated or presented).
REFUSALS_BURST = "refusals.burst"
# ``threshold`` unauthenticated refusals within the window from one address, whatever key
# ids it presented (key guessing with a fresh id each try, or no key at all).
REFUSALS_ADDRESS_BURST = "refusals.address_burst"


class RefusalBurst(_Base):
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
        if obs.name not in _DENIALS or obs.status in (429, 503):
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


class RefusalReason(_Base):
    """Any refusal carrying one of ``reasons`` (e.g. ``policy.error``: a policy that failed to
    evaluate denied the call, and someone must look at the policy set)."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.reasons = frozenset(rule.params.reasons)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in _DENIALS or not self.reasons.intersection(obs.reasons):
            return []
        hit = sorted(self.reasons.intersection(obs.reasons))
        subject = obs.principal_id or obs.key or obs.address or "-"
        return [self.finding(obs, "principal", subject, hit[0], reasons=hit, model=obs.model)]


# A bound key presented without its certificate (or with another one): the key left the
# machine that holds the certificate, exactly the leaked-credential signal.
_CERT_REASONS = frozenset({"credential.cert_missing", "credential.cert_mismatch"})


class CertBinding(_Base):
    """The first refusal of a certificate-bound key for a missing or wrong client
    certificate (``credential.cert_missing`` / ``credential.cert_mismatch``) per key within
    ``window``: one alert per leak, not one per retry."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.CertBinding = rule.params
        self.fired: dict[str, float] = {}  # key → when it last raised a finding

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in _DENIALS or not _CERT_REASONS.intersection(obs.reasons):
            return []
        key = obs.key
        if key is None:
            return []
        horizon = obs.at - self.p.window
        last = self.fired.get(key)
        if last is not None and last >= horizon:
            return []
        self.fired[key] = obs.at
        if len(self.fired) > 2 * STATE_SUBJECTS_MAX:
            self._forget(horizon)
        hit = sorted(_CERT_REASONS.intersection(obs.reasons))
        return [
            self.finding(
                obs,
                "credential",
                key,
                "detect.cert_binding_violation",
                reasons=hit,
                address=obs.address,
            )
        ]

    def _forget(self, horizon: float) -> None:
        """Keys whose window has passed fire again anyway: drop them, then (a spray of bound
        keys inside one window) all but the most recent, as ``state()`` keeps. Amortised:
        runs once the keys have doubled past the bound."""
        live = {key: at for key, at in self.fired.items() if at >= horizon}
        self.fired = dict(newest(live, float, STATE_SUBJECTS_MAX))

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        return dict(newest(self.fired, float, limit))

    def restore(self, state: dict[str, Any]) -> None:
        self.fired = {str(key): float(at) for key, at in state.items()}


class OutsideContract(_Base):
    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.denied" or "vendor.outside_contract" not in obs.reasons:
            return []
        return [
            self.finding(
                obs, "credential", obs.key or "-", "vendor.outside_contract", org_id=obs.org_id
            )
        ]


class OffHours(_Base):
    """A call in an hour (UTC) that holds under ``min_share`` of the principal's learned use."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.OffHours = rule.params
        self.hours: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
        self.first_seen: dict[str, float] = {}

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.allowed" or obs.principal_id is None:
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


class Dormant(_Base):
    """A key whose last use (or creation) is older than ``dormant`` is used again."""

    def __init__(self, rule: r.Rule, last_used: dict[str, float] | None = None) -> None:
        super().__init__(rule)
        self.p: r.Dormant = rule.params
        self.last: dict[str, float] = dict(last_used or {})

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.allowed" or obs.credential_id is None:
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


class Content(_Base):
    """The gateway matched this rule's patterns against the prompt in flight."""

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.allowed" or self.rule.id not in obs.content_flags:
            return []
        return [
            self.finding(
                obs, "principal", obs.principal_id or "-", "prompt.content", model=obs.model
            )
        ]


class Extraction(_Base):
    """``calls_per_bucket`` calls to one model for ``sustained_buckets`` buckets in a row by
    one principal (or vendor): systematic querying."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.Extraction = rule.params
        # (subject, model) → [bucket start, calls, consecutive full buckets, fired]
        self.state_of: dict[tuple[str, str], list[Any]] = {}

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != "request.allowed" or obs.model is None:
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


BUILDERS: dict[str, Callable[..., Detector]] = {
    "refusal_reason": RefusalReason,
    "cert_binding": CertBinding,
    "canary": Canary,
    "out_of_network": OutOfNetwork,
    "multi_network": MultiNetwork,
    "new_network": NewNetwork,
    "volume": Volume,
    "refusal_burst": RefusalBurst,
    "outside_contract": OutsideContract,
    "off_hours": OffHours,
    "dormant": Dormant,
    "content": Content,
    "extraction": Extraction,
}
assert set(BUILDERS) == set(r.DETECTORS)


def build(rule: r.Rule, *, last_used: dict[str, float] | None = None) -> Detector:
    if rule.detector == "dormant":
        return Dormant(rule, last_used)
    return BUILDERS[rule.detector](rule)
