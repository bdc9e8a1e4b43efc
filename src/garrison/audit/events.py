"""Typed audit events with stable dotted names, and their canonical encoding.

The encoding is versioned (``"v"``) JSON without whitespace, top-level keys in sorted order:
the bytes stored are exactly the bytes the tamper-evident tree hashes. The record names
its own leaf index (``"i"``), so a row moved, removed or slipped in is located exactly. Events never
carry a secret or a request body — only a body's SHA-256 digest and size.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from garrison.audit.frozen import quick_init
from garrison.errors import AuditRecordInvalid

# 2: every event names the caller's address ``client_address`` (version 1 wrote ``address``
# in admin, enrollment and sign-in events); read it with ``caller_address``.
ENCODING_VERSION = 2

# The key under which an event's data names the caller's network address.
CLIENT_ADDRESS = "client_address"
# What records of encoding version 1 used outside the data plane.
V1_ADDRESS = "address"


def caller_address(data: Mapping[str, Any]) -> Any:
    """The caller's address an event's data names, whichever version wrote it (``None``
    when it names none)."""
    found = data.get(CLIENT_ADDRESS)
    return found if found is not None else data.get(V1_ADDRESS)


class EventFacts(Protocol):
    """What readers of an event's data (the detectors) take from it, whichever event it is:
    a typed payload (``garrison.audit.payloads``) answers these as fields."""

    @property
    def org_id(self) -> str | None: ...
    @property
    def client_address(self) -> str | None: ...
    @property
    def status(self) -> int | None: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def tokens_in(self) -> int | None: ...
    @property
    def tokens_out(self) -> int | None: ...
    @property
    def presented_key_id(self) -> str | None: ...
    @property
    def content_flags(self) -> tuple[str, ...]: ...

    def as_data(self) -> dict[str, Any]:
        """The event's ``data`` as the record stores it."""
        ...


class EventName(enum.StrEnum):
    REQUEST_ALLOWED = "request.allowed"
    REQUEST_DENIED = "request.denied"
    REQUEST_COMPLETED = "request.completed"
    ORG_CREATED = "org.created"
    VENDOR_ACTIVATED = "vendor.activated"
    VENDOR_SUSPENDED = "vendor.suspended"
    VENDOR_EXPIRED = "vendor.expired"
    VENDOR_OFFBOARDED = "vendor.offboarded"
    VENDOR_UPDATED = "vendor.updated"
    PRINCIPAL_CREATED = "principal.created"
    PRINCIPAL_UPDATED = "principal.updated"
    CREDENTIAL_CREATED = "credential.created"
    CREDENTIAL_REVOKED = "credential.revoked"
    CREDENTIAL_ROTATED = "credential.rotated"
    MODEL_CREATED = "model.created"
    MODEL_UPDATED = "model.updated"
    SEAL_KEY_ROTATED = "keys.seal_rotated"
    SYSTEM_INITIALIZED = "system.initialized"
    GATEWAY_STARTED = "gateway.started"
    GATEWAY_STOPPED = "gateway.stopped"
    # The wall clock moved against the monotonic clock (contract expiries pause), and agreed again.
    CLOCK_JUMPED = "clock.jumped"
    CLOCK_AGREED = "clock.agreed"
    AUDIT_RECOVERED = "audit.recovered"
    ADMIN_DENIED = "admin.denied"
    LOCK_CREATED = "lock.created"
    LOCK_LIFT_REQUESTED = "lock.lift_requested"
    LOCK_LIFTED = "lock.lifted"
    ACCESS_REQUESTED = "access.requested"
    ACCESS_APPROVED = "access.approved"
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    ACCESS_CANCELLED = "access.cancelled"
    ACCESS_EXPIRED = "access.expired"
    GRANT_REVOKED = "grant.revoked"
    CHANGE_PROPOSED = "change.proposed"
    CHANGE_DENIED = "change.denied"
    CHANGE_APPROVED = "change.approved"  # an approval that authorises a later step
    POLICY_CHANGED = "policy.changed"
    ALERT_RAISED = "alert.raised"
    ALERT_UPDATED = "alert.updated"  # acknowledged, resolved, or a playbook acted on it
    RULES_LOADED = "rules.loaded"
    RULES_REFUSED = "rules.refused"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_UPDATED = "incident.updated"
    ADMIN_READ = "admin.read"
    ADMIN_UNCHANGED = "admin.unchanged"  # a write that found nothing to change
    ADMIN_FAILED = "admin.failed"  # the server failed an admin call (the log holds the error)
    ENROLLMENT_ISSUED = "enrollment.issued"  # an invitation: a one-time code (never stored)
    ENROLLMENT_REDEEMED = "enrollment.redeemed"
    ENROLLMENT_REFUSED = "enrollment.refused"
    BREAK_GLASS = "identity.break_glass"  # recover-admin on the host
    # sign-in through the organisation's identity provider (issue 16)
    IDENTITY_LINKED = "identity.linked"  # an invitation redeemed by a first sign-in
    SESSION_STARTED = "session.started"  # an ID token exchanged for an access token
    SESSION_REFUSED = "session.refused"  # an exchange refused (reason codes in data)


@quick_init
@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record. The indexed fields are copied to columns for querying."""

    name: EventName
    at: float
    actor: str | None = None
    request_id: str | None = None
    principal_id: str | None = None
    credential_id: str | None = None
    model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # Optional full capture of the request body, already encrypted (never part of the
    # record: the record keeps the body's SHA-256, which binds the capture to the log).
    capture: bytes | None = field(default=None, repr=False)
    # The record, encoded when the event was appended (see ``prepare``).
    encoded: EncodedRecord | None = field(default=None, repr=False, compare=False)
    # The typed payload ``data`` was written from, when its producer built one (readers take
    # its fields; ``data`` is ``payload.as_data()``, what the record stores).
    payload: EventFacts | None = field(default=None, repr=False, compare=False)

    def encode(self, index: int) -> bytes:
        """The record of this event as leaf ``index`` of the log.

        Top-level keys are written in sorted order (by construction, not by a sort: orjson's
        recursive key sort costs ten times the rest of the encoding); ``data`` keeps the
        order its producer wrote. The stored bytes are what the tree hashes, so nothing
        ever needs to re-encode an event to verify it.
        """
        return (self.encoded or self._encode_parts()).record(index)

    def prepare(self) -> AuditEvent:
        """Encode this event's record now, all but the leaf index (spliced in when the writer
        orders it), and keep it with the event. ``AuditRecordInvalid`` if it cannot be
        encoded (a string that is not valid UTF-8, a value JSON cannot hold): the fault is
        this event's alone, found before it can join a batch. Returns the event itself."""
        if self.encoded is None:
            # A cache, not a change: ``encoded`` is derived from the other fields and is not
            # part of the event's identity (frozen dataclasses allow this one way in).
            object.__setattr__(self, "encoded", self._encode_parts())
        return self

    def unindexed(self) -> bytes:
        """The record without its ``"i"`` key: what a directory change puts in the audit
        outbox. ``EncodedRecord.from_unindexed`` gives back the parts, so the record the
        writer later stores as leaf ``i`` is byte for byte ``encode(i)``."""
        parts = self.encoded or self._encode_parts()
        return parts.head[:-_INDEX_AT] + parts.tail

    def _encode_parts(self) -> EncodedRecord:
        try:
            whole = orjson.dumps(
                {
                    "actor": self.actor,
                    "at": self.at,
                    "credential_id": self.credential_id,
                    "data": self.data,
                    "i": 0,
                    "model": self.model,
                    "name": self.name,  # orjson writes an enum member as its value
                    "principal_id": self.principal_id,
                    "request_id": self.request_id,
                    "v": ENCODING_VERSION,
                }
            )
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise AuditRecordInvalid(f"{self.name.value}: {type(exc).__name__}") from None
        # The last match is the top-level key: after ``data`` come only strings (whose
        # quotes are escaped), null and an integer, none of which can hold this text.
        cut = whole.rfind(_INDEX_MARK)
        return EncodedRecord(whole[: cut + _INDEX_AT], whole[cut + _INDEX_AT + 1 :])


# Where the leaf index sits in a record encoded with index 0.
_INDEX_MARK = b',"i":0,"model":'
_INDEX_KEY = b',"i":'
_INDEX_AT = len(_INDEX_KEY)
_MODEL_MARK = b',"model":'


class EncodedRecord:
    """An event's record in two parts around its leaf index: ``head + str(i) + tail`` is
    byte for byte what encoding the whole record at once gives. (A plain slotted class: a
    frozen dataclass costs more to build than the encoding it holds.)"""

    __slots__ = ("head", "tail")

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head = head
        self.tail = tail

    def record(self, index: int) -> bytes:
        return b"%b%d%b" % (self.head, index, self.tail)

    @classmethod
    def from_unindexed(cls, record: bytes) -> EncodedRecord:
        """The parts of a record stored without its index (``AuditEvent.unindexed``). The
        last ``,"model":`` is the top-level key: after it come only strings (whose quotes
        are escaped, so ``,"`` cannot occur inside them), null and an integer."""
        cut = record.rfind(_MODEL_MARK)
        if cut < 0:
            raise AuditRecordInvalid("outbox record has no top-level model key")
        return cls(record[:cut] + _INDEX_KEY, record[cut:])


def decode(record: bytes) -> dict[str, Any]:
    value = orjson.loads(record)
    if not isinstance(value, dict):
        raise ValueError("audit record is not an object")
    return value
