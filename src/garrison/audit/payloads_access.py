"""Typed ``data`` of just-in-time access: requests, approvals, grants and their ends
(``garrison.store.access`` builds them).

Each class's fields are the keys its producer writes, in that order (``payload_base``); the
journal adds ``origin`` after them when the change came through the admin API.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from garrison.audit.events import EventName
from garrison.audit.payload_base import Payload, named


@named(EventName.ACCESS_REQUESTED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequested(Payload):
    """``access.requested``: the request, the model asked for, for how long and why, and
    how many approvals it needs."""

    request_id: str
    model_id: str
    duration_s: float
    reason: str
    approvals_needed: int


@named(EventName.ACCESS_APPROVED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AccessApproved(Payload):
    """``access.approved``: one more approval (the approvers' ids so far); ``complete``
    when they are enough (an ``access.granted`` follows)."""

    request_id: str
    approvals: Sequence[str]
    complete: bool


@named(EventName.ACCESS_GRANTED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AccessGranted(Payload):
    """``access.granted``: the grant a request's approvals made, until ``expires_at``."""

    grant_id: str
    request_id: str
    expires_at: float
    approvals: Sequence[str]


@named(EventName.ACCESS_DENIED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AccessDenied(Payload):
    """``access.denied``: an approver refused the request, and why."""

    request_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessEnded(Payload):
    """A request ended with no decision (``access.cancelled`` by its requester,
    ``access.expired`` past its time; one subclass each): the request alone."""

    request_id: str


@named(EventName.ACCESS_CANCELLED)
class AccessCancelled(AccessEnded):
    __slots__ = ()


@named(EventName.ACCESS_EXPIRED)
class AccessExpired(AccessEnded):
    __slots__ = ()


@named(EventName.GRANT_REVOKED)
@dataclass(frozen=True, slots=True, kw_only=True)
class GrantRevoked(Payload):
    """``grant.revoked``: a grant ended early, and why."""

    grant_id: str
    reason: str


PAYLOADS: tuple[type[Payload], ...] = (
    AccessRequested,
    AccessApproved,
    AccessGranted,
    AccessDenied,
    AccessCancelled,
    AccessExpired,
    GrantRevoked,
)
