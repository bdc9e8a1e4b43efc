"""Admission after authentication: what one credential or principal may hold at once.

The process-wide in-flight limit (``max_concurrent_requests``) is taken before anything is
known about the caller, so alone it lets one key fill every slot. Once a call has an
identity it also takes a slot of its credential and of its principal, and the body it
buffers is charged to a process-wide budget of buffered body bytes, of which one principal
may hold only a share. A caller over its own limits is refused (429) without touching
anyone else's; only the process-wide budget answers 503.

``Admission`` holds plain counters (event loop only, no locks); a ``Ticket`` is what one
call took, given back exactly once when the call ends. ``CallRate`` counts one principal's
calls per minute in this process (the embedded default, and the fallback of a replica whose
shared limits in Redis cannot be asked: ``gateway.shared_admission``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from garrison.domain import Reason
from garrison.errors import GarrisonError, Overloaded, RateLimited

if TYPE_CHECKING:
    from garrison.gateway.limits import GatewayLimits

# Calls in flight for one credential: an eval harness streaming 500 generations at once
# fits; one key can hold at most an eighth of the process's 4,096 slots.
MAX_CONCURRENT_PER_CREDENTIAL = 512
# Calls in flight for one principal over all its keys: twice one key, so a rotation overlap
# never refuses, while a principal minting keys cannot take more than a quarter.
MAX_CONCURRENT_PER_PRINCIPAL = 1024
# Request-body bytes buffered in the process at once (bodies are held until the call ends):
# 64 bodies at the 8 MiB limit. The parsed and re-encoded copies cost ~3x this in RSS.
MAX_BUFFERED_BODY_BYTES = 512 * 1024 * 1024
# One principal's share of that budget: 8 full-size bodies in flight, so at least 8
# principals must be sending large bodies together before anyone sees a 503.
MAX_BUFFERED_BODY_BYTES_PER_PRINCIPAL = 64 * 1024 * 1024
# Calls one principal may start per minute (a minute's worth at once, then one every
# 60/limit s): 2,000 calls a second sustained, more than the 1,024 calls in flight a
# principal may hold can make at the ~0.5 s of the fastest real model calls, so normal use
# (an eval harness included) never meets it; a runaway loop or a stolen key run at full
# speed against a fast model does (429 ``principal.rate``).
MAX_CALLS_PER_MINUTE_PER_PRINCIPAL = 120_000
# Principals whose call rate this process remembers before it forgets those whose budget
# has refilled (forgetting a full bucket changes nothing).
CALL_RATE_PRINCIPALS_MAX = 100_000


class PrincipalBodyBudget(RateLimited):
    """The caller's own share of buffered body bytes is used up."""

    default_message = "Too many large requests in flight for this caller; retry later."


class ConcurrencyLimited(RateLimited):
    default_message = "Too many calls in flight for this caller; retry later."


class BodyBudgetExhausted(Overloaded):
    default_message = "The gateway is buffering too much request data; retry later."


class CallRateLimited(RateLimited):
    default_message = "Too many calls for this caller; retry later."


class CallRate:
    """Calls per minute per principal in this process (GCRA: the same arithmetic as the
    shared limit's script in ``garrison.shared.scripts``). Clock in seconds, passed in."""

    __slots__ = ("_tat",)

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}  # principal → theoretical arrival time

    def take(self, principal_id: str, per_minute: int, now: float) -> float:
        """Count one call: 0.0 when it fits, else the seconds until one more would."""
        interval = 60.0 / per_minute
        tat = max(self._tat.get(principal_id, now), now)
        after = tat + interval
        if after - now > 60.0:
            return after - now - 60.0
        if len(self._tat) >= CALL_RATE_PRINCIPALS_MAX and principal_id not in self._tat:
            self._tat = {p: t for p, t in self._tat.items() if t > now}
        self._tat[principal_id] = after
        return 0.0

    def __len__(self) -> int:
        return len(self._tat)


class Refused(Exception):
    """A call over an admission limit: the error for the caller and the audit reason."""

    def __init__(self, error: GarrisonError, reason: Reason) -> None:
        super().__init__(reason.value)
        self.error = error
        self.reason = reason


@dataclass(slots=True)
class Admission:
    """Per-credential and per-principal call counts and buffered body bytes."""

    by_credential: Counter[str] = field(default_factory=Counter)
    by_principal: Counter[str] = field(default_factory=Counter)
    body_by_principal: Counter[str] = field(default_factory=Counter)
    buffered: int = 0
    # The most body bytes ever buffered at once (for tests and /metrics).
    peak_buffered: int = 0
    # Calls per minute per principal, counted here (no shared limits, or Redis down).
    rate: CallRate = field(default_factory=CallRate)

    def enter(self, limits: GatewayLimits, credential_id: str, principal_id: str) -> Ticket:
        """A ticket for one call, or ``Refused`` when its credential or principal is full."""
        if self.by_credential[credential_id] >= limits.max_concurrent_per_credential:
            raise Refused(ConcurrencyLimited(), Reason.CREDENTIAL_CONCURRENCY)
        if self.by_principal[principal_id] >= limits.max_concurrent_per_principal:
            raise Refused(ConcurrencyLimited(), Reason.PRINCIPAL_CONCURRENCY)
        self.by_credential[credential_id] += 1
        self.by_principal[principal_id] += 1
        return Ticket(self, limits, credential_id, principal_id)

    def _forget(self, counter: Counter[str], key: str, amount: int) -> None:
        counter[key] -= amount
        if counter[key] <= 0:
            del counter[key]


class Ticket:
    """What one call holds: its two slots and the body bytes charged so far."""

    __slots__ = ("_admission", "_credential", "_limits", "_principal", "body_bytes", "released")

    def __init__(
        self, admission: Admission, limits: GatewayLimits, credential: str, principal: str
    ) -> None:
        self._admission = admission
        self._limits = limits
        self._credential = credential
        self._principal = principal
        self.body_bytes = 0
        self.released = False

    def charge(self, amount: int) -> None:
        """Count ``amount`` more body bytes, or raise ``Refused`` (nothing charged) when the
        principal's share or the process budget would be exceeded."""
        if amount <= 0:
            return
        admission, limits = self._admission, self._limits
        if (
            admission.body_by_principal[self._principal] + amount
            > limits.max_buffered_body_bytes_per_principal
        ):
            raise Refused(PrincipalBodyBudget(), Reason.BODY_BUDGET_PRINCIPAL)
        if admission.buffered + amount > limits.max_buffered_body_bytes:
            raise Refused(BodyBudgetExhausted(), Reason.BODY_BUDGET)
        admission.body_by_principal[self._principal] += amount
        admission.buffered += amount
        admission.peak_buffered = max(admission.peak_buffered, admission.buffered)
        self.body_bytes += amount

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        admission = self._admission
        admission._forget(admission.by_credential, self._credential, 1)
        admission._forget(admission.by_principal, self._principal, 1)
        if self.body_bytes:
            admission._forget(admission.body_by_principal, self._principal, self.body_bytes)
            admission.buffered -= self.body_bytes
            self.body_bytes = 0


__all__ = [
    "CALL_RATE_PRINCIPALS_MAX",
    "MAX_BUFFERED_BODY_BYTES",
    "MAX_BUFFERED_BODY_BYTES_PER_PRINCIPAL",
    "MAX_CALLS_PER_MINUTE_PER_PRINCIPAL",
    "MAX_CONCURRENT_PER_CREDENTIAL",
    "MAX_CONCURRENT_PER_PRINCIPAL",
    "Admission",
    "CallRate",
    "CallRateLimited",
    "Refused",
    "Ticket",
]
