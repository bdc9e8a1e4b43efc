"""Where a key or a principal calls from: a refused network, one key from many networks, a
principal's first call from a network new to it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from garrison.audit.events import EventName
from garrison.detect import rules as r
from garrison.detect.base import (
    DENIALS,
    STATE_NETWORKS_MAX,
    STATE_SUBJECTS_MAX,
    Base,
    Facts,
    newest,
)
from garrison.detect.observation import Finding, Obs, network_of

_NETWORK_REASONS = frozenset({"credential.network_not_allowed", "vendor.network_not_allowed"})


class OutOfNetwork(Base):
    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in DENIALS or not _NETWORK_REASONS.intersection(obs.reasons):
            return []
        subject = obs.key or obs.address or "-"
        return [
            self.finding(
                obs, "credential", subject, "credential.out_of_network", address=obs.address
            )
        ]


class MultiNetwork(Base):
    """One key used (successfully) from ``min_networks`` networks within ``window``."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.MultiNetwork = rule.params
        # key → network → (last seen, last index)
        self.seen: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if (
            obs.name != EventName.REQUEST_ALLOWED
            or obs.credential_id is None
            or obs.address is None
        ):
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


class NewNetwork(Base):
    """A principal's first call from a network not seen for it (after a learning period)."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.NewNetwork = rule.params
        self.networks: dict[str, set[str]] = defaultdict(set)
        self.events: dict[str, int] = defaultdict(int)
        self.last_at: dict[str, float] = {}  # principal → its last call (state bounds)

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name != EventName.REQUEST_ALLOWED or obs.principal_id is None or obs.address is None:
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
