"""Typed ``data`` of the host's events: the system initialised, a gateway process started or
stopped, the wall clock jumped or agreed again, the audit log writable again, the
detector's rules file loaded or refused, and a break-glass admin key issued on the host.

Each class's fields are the keys its producer writes, in that order (``payload_base``).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from garrison.audit.events import EventName
from garrison.audit.payload_base import Payload, named


@named(EventName.SYSTEM_INITIALIZED)
@dataclass(frozen=True, slots=True, kw_only=True)
class SystemInitialized(Payload):
    """``system.initialized``: ``garrison init`` made the data directory ``data_dir``."""

    data_dir: str


@named(EventName.GATEWAY_STARTED)
@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStarted(Payload):
    """``gateway.started``: a process listens on ``host``:``port`` with the directory's
    snapshot ``snapshot_version`` in force."""

    host: str
    port: int
    snapshot_version: int


@named(EventName.GATEWAY_STOPPED)
@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStopped(Payload):
    """``gateway.stopped``: a process stopped cleanly, after ``calls`` model calls."""

    calls: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockChanged(Payload):
    """The wall clock against the monotonic one (``clock.jumped``, ``clock.agreed``, one
    subclass each): the skew in seconds when it changed."""

    skew_s: float


@named(EventName.CLOCK_JUMPED)
class ClockJumped(ClockChanged):
    """Contract expiries paused."""

    __slots__ = ()


@named(EventName.CLOCK_AGREED)
class ClockAgreed(ClockChanged):
    """Contract expiries resume."""

    __slots__ = ()


@named(EventName.AUDIT_RECOVERED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecovered(Payload):
    """``audit.recovered``: the audit log is writable again; since when it was not (null:
    unknown) and how many batches failed meanwhile."""

    unavailable_since: float | None
    failed_batches: int


@named(EventName.RULES_LOADED)
@dataclass(frozen=True, slots=True, kw_only=True)
class RulesLoaded(Payload):
    """``rules.loaded``: the detector's rules file, its SHA-256, and the ids of its rules
    and playbooks now in force."""

    path: str
    sha256: str
    rules: Sequence[str]
    playbooks: Sequence[str]


@named(EventName.RULES_REFUSED)
@dataclass(frozen=True, slots=True, kw_only=True)
class RulesRefused(Payload):
    """``rules.refused``: the rules file and why it was refused (the previous rules stay)."""

    path: str
    error: str


@named(EventName.BREAK_GLASS)
@dataclass(frozen=True, slots=True, kw_only=True)
class BreakGlass(Payload):
    """``identity.break_glass``: an admin key issued locally on ``host`` for ``principal``
    (a name), as ``credential_id``."""

    principal: str
    credential_id: str
    host: str


PAYLOADS: tuple[type[Payload], ...] = (
    SystemInitialized,
    GatewayStarted,
    GatewayStopped,
    ClockJumped,
    ClockAgreed,
    AuditRecovered,
    RulesLoaded,
    RulesRefused,
    BreakGlass,
)
