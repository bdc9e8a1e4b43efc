"""Typed ``data`` of the admin API's own events: a call refused, read, changing nothing or
failing (``garrison.admin.dispatch``), and two-person changes proposed, decided and the
policy set put in force (``garrison.store.changes``).

Each class's fields are the keys its producer writes, in that order (``payload_base``); the
journal adds ``origin`` after them when the change came through the admin API. A key named
as one of the facts readers take (``reasons``, ``presented_key_id`` and an optional
``client_address``) is held under another field name and answered as that fact (a tuple, or
``None`` when the record leaves the key out), as the record's dictionary answered it.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from garrison.audit.events import V1_ADDRESS, EventName
from garrison.audit.payload_base import ABSENT, Absent, Payload, keyed, named, required


@named(EventName.ADMIN_DENIED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AdminDenied(Payload):
    """``admin.denied``: a refused admin call, the status its caller got and the reason
    code; with the key id presented when it did not authenticate (null: none presented),
    the lock that refused it, or the rule a refused body broke (null: none named)."""

    method: str
    path: str
    client_address: str = required()
    status: int = required()
    reason_codes: Sequence[str] = keyed("reasons")
    key_id: str | Absent | None = keyed("presented_key_id", default=ABSENT)  # noqa: RUF009
    lock_id: str | Absent = ABSENT
    rule: str | Absent | None = ABSENT

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(self.reason_codes)

    @property
    def presented_key_id(self) -> str | None:
        return None if self.key_id is ABSENT else self.key_id


@named(EventName.ADMIN_READ)
@dataclass(frozen=True, slots=True, kw_only=True)
class AdminRead(Payload):
    """``admin.read``, two shapes: an audited read (its ``query``), or any call made with
    a canary key (the caller's ``client_address``: its use must reach the detectors)."""

    method: str
    path: str
    address: str | Absent = keyed("client_address", default=ABSENT)  # noqa: RUF009
    query: Mapping[str, str] | Absent = ABSENT

    @property
    def client_address(self) -> str | None:
        return None if self.address is ABSENT else self.address

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Payload | None:
        """``None`` (read as ``Untyped``) for an encoding-version-1 canary record, which
        named the caller's address ``address``: its address must still reach readers."""
        if V1_ADDRESS in data:
            return None
        return super(AdminRead, cls).from_data(data)


@named(EventName.ADMIN_UNCHANGED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AdminUnchanged(Payload):
    """``admin.unchanged``, two shapes: a change call that found nothing to change (its
    ``method``, ``path`` and ``query``: ``garrison.admin.dispatch``), or an approved
    two-person change with nothing left to change (``change_id`` and a ``note``:
    ``garrison.store.changes.close_unchanged``). Each writes its own keys only."""

    method: str | Absent = ABSENT
    path: str | Absent = ABSENT
    query: Mapping[str, str] | Absent = ABSENT
    change_id: str | Absent = ABSENT
    note: str | Absent = ABSENT


@named(EventName.ADMIN_FAILED)
@dataclass(frozen=True, slots=True, kw_only=True)
class AdminFailed(Payload):
    """``admin.failed``: an admin call that failed on Garrison's side (or a client error
    raised late), the status answered and the error code."""

    method: str
    path: str
    query: Mapping[str, str]
    status: int = required()
    error: str


@named(EventName.CHANGE_PROPOSED)
@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeProposed(Payload):
    """``change.proposed``: a two-person change waiting for a second admin."""

    change_id: str
    kind: str
    target: str
    summary: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeDecided(Payload):
    """A second admin decided a proposal (``change.denied``, ``change.approved`` with
    nothing applied yet; one subclass each)."""

    change_id: str
    kind: str
    target: str


@named(EventName.CHANGE_DENIED)
class ChangeDenied(ChangeDecided):
    __slots__ = ()


@named(EventName.CHANGE_APPROVED)
class ChangeApproved(ChangeDecided):
    __slots__ = ()


@named(EventName.POLICY_CHANGED)
@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyChanged(Payload):
    """``policy.changed``: the organisation's policy set version now in force, its
    SHA-256 and size in bytes, and who proposed it (the actor approved it)."""

    version: int
    sha256: str
    size: int = keyed("bytes")
    proposed_by: str


PAYLOADS: tuple[type[Payload], ...] = (
    AdminDenied,
    AdminRead,
    AdminUnchanged,
    AdminFailed,
    ChangeProposed,
    ChangeDenied,
    ChangeApproved,
    PolicyChanged,
)
