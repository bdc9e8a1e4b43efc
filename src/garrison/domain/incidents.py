"""Incident lifecycle as a transition table (NIST SP 800-61: detect, contain, recover, close).

open ──▶ contained ──▶ resolved ──▶ closed
  │          ▲  │          │
  └──────────┼──┴──────────┘  (open → resolved; contained → open; resolved → open)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from garrison.errors import BadRequest


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    CONTAINED = "contained"
    RESOLVED = "resolved"
    CLOSED = "closed"


INCIDENT_TRANSITIONS: Mapping[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.OPEN: frozenset({IncidentStatus.CONTAINED, IncidentStatus.RESOLVED}),
    IncidentStatus.CONTAINED: frozenset({IncidentStatus.RESOLVED, IncidentStatus.OPEN}),
    IncidentStatus.RESOLVED: frozenset({IncidentStatus.CLOSED, IncidentStatus.OPEN}),
    IncidentStatus.CLOSED: frozenset(),
}


class IllegalIncidentTransition(BadRequest):
    code = "illegal_transition"


def check_incident_transition(current: IncidentStatus, target: IncidentStatus) -> None:
    if target not in INCIDENT_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in INCIDENT_TRANSITIONS[current])) or "none"
        raise IllegalIncidentTransition(
            f"an incident cannot go from {current.value} to "
            f"{target.value} (from {current.value}: {allowed})",
            rule="incident-lifecycle",
        )
