"""Typed ``data`` of the responders' events: locks, alerts and incidents (``garrison.store``'s
``locks``, ``alerts`` and ``incidents`` build them).

Each class's fields are the keys its producer writes, in that order (``payload_base``); the
journal adds ``origin`` after them when the change came through the admin API.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from garrison.audit.events import EventName
from garrison.audit.payload_base import ABSENT, Absent, Payload, keyed, named


@named(EventName.LOCK_CREATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockCreated(Payload):
    """``lock.created``: what is locked, why, until when (null: until lifted) and the
    incident it serves; a lock placed while the database could not be written is written
    later with ``emergency: true`` and the time it was placed."""

    lock_id: str
    kind: str
    target: str
    target_name: str
    reason: str
    expires_at: float | None
    incident_id: str | None
    emergency: bool | Absent = ABSENT
    placed_at: float | Absent = ABSENT


@named(EventName.LOCK_LIFT_REQUESTED)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockLiftRequested(Payload):
    """``lock.lift_requested``: the first admin's request to lift a global lockdown."""

    lock_id: str
    kind: str
    target: str
    reason: str


@named(EventName.LOCK_LIFTED)
@dataclass(frozen=True, slots=True, kw_only=True)
class LockLifted(Payload):
    """``lock.lifted``; a global lockdown names the admin who requested it (a second one
    lifts it)."""

    lock_id: str
    kind: str
    target: str
    reason: str
    requested_by: str | Absent | None = ABSENT


@named(EventName.ALERT_RAISED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised(Payload):
    """``alert.raised``: the detector's rule, the finding (its subject, the leaf indices of
    its evidence, the detector's detail) and how long after the fact it was raised."""

    alert_id: str
    rule_id: str
    severity: str
    reason: str
    subject: Mapping[str, str]
    evidence: Sequence[int]
    detail: Mapping[str, Any]
    detected_after_s: float


@named(EventName.ALERT_UPDATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertUpdated(Payload):
    """``alert.updated``: acknowledged or resolved (``from``, ``to``), a note, or a
    playbook's action on it."""

    alert_id: str
    from_status: str | Absent = keyed("from", default=ABSENT)  # noqa: RUF009 - a field()
    to: str | Absent = ABSENT
    note: str | Absent = ABSENT
    action: Mapping[str, Any] | Absent = ABSENT


@named(EventName.INCIDENT_OPENED)
@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentOpened(Payload):
    """``incident.opened``: its title, the time it covers from, and its subjects by kind."""

    incident_id: str
    title: str
    since: float
    vendor: Sequence[str]
    principal: Sequence[str]
    credential: Sequence[str]


@named(EventName.INCIDENT_UPDATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentUpdated(Payload):
    """``incident.updated``: a status moved (``from``, ``to``), a note, or both."""

    incident_id: str
    from_status: str | Absent = keyed("from", default=ABSENT)  # noqa: RUF009 - a field()
    to: str | Absent = ABSENT
    note: str | Absent = ABSENT


PAYLOADS: tuple[type[Payload], ...] = (
    LockCreated,
    LockLiftRequested,
    LockLifted,
    AlertRaised,
    AlertUpdated,
    IncidentOpened,
    IncidentUpdated,
)
