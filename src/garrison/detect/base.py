"""What a detector is: the ``Detector`` protocol, the ``Facts`` it may consult, the ``Base``
every built-in detector extends, and the bounds on the state detectors export.

A detector is pure: observations and the clock in, findings out; its state (windows,
baselines) lives in the instance; thresholds and windows come from its rule.

``Facts`` is the read-only directory view a detector may consult (is this key a canary,
when was it created, which org is a principal in): only the credentials and principals, so
the gateway's current snapshot satisfies it, and so does any object holding those two maps.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from garrison.audit.events import EventName
from garrison.detect import rules as r
from garrison.detect.observation import Finding, Obs
from garrison.domain import Credential, Principal


class Facts(Protocol):
    """The directory facts detectors read (a ``garrison.domain.snapshot.Snapshot`` has them)."""

    @property
    def credentials(self) -> Mapping[str, Credential]: ...

    @property
    def principals(self) -> Mapping[str, Principal]: ...


# Evidence indices kept per finding: enough to point an investigator at the events.
EVIDENCE_MAX = 20
# Refusals on the data plane and on the admin API (key guessing there counts as much).
DENIALS = frozenset({EventName.REQUEST_DENIED, EventName.ADMIN_DENIED})

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


class Base:
    """What every built-in detector shares: its rule, no state, and how a finding is made."""

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
