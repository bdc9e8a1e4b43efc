"""Typed ``data`` of audit events: a frozen dataclass per event name. Here, the events the
data plane writes and the detectors read (``request.allowed``, ``request.denied``,
``request.completed``), and the registry of every event's class (``PAYLOAD_CLASSES``: the
directory's are in ``payloads_directory``, the responders' in ``payloads_respond``, just-in-
time access in ``payloads_access``, the admin API's and two-person changes' in
``payloads_admin``, the host's in ``payloads_host``, enrollment and sign-in in
``payloads_identity``, all built on ``payload_base``). Every event name has a class (a test
holds it); ``Untyped`` reads only what no class can: a record under a name this version does
not know, or one missing a key its class requires.

A payload is written through ``as_data``, which gives the dictionary the record stores
under ``"data"``, with its keys in the order the gateway has always written them and the
optional ones left out when unset: a record built from a payload is byte for byte the
record the dictionary would give (encoding version 2 is unchanged, and the tree hashes the
same bytes). ``payload_of`` reads a stored record's data back into its payload. Readers
(the detectors) take the fields every payload answers (``EventFacts`` in
``garrison.audit.events``), never keys.

The record stays the truth: a payload read back holds its class's fields only (a key its
class does not name — ``origin``, which the journal adds to a directory change — is left in
the record, not in the payload).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from garrison.audit import (
    payload_base,
    payloads_access,
    payloads_admin,
    payloads_directory,
    payloads_host,
    payloads_identity,
    payloads_respond,
)
from garrison.audit.events import CLIENT_ADDRESS, EventFacts, EventName, caller_address
from garrison.audit.frozen import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class CallFields:
    """What every data-plane event names about its call (written after the event's own
    fields): the endpoint, the caller's address and vendor, the public id of a key that did
    not authenticate, and the request body's SHA-256 and size once it was read. One call's
    ``request.allowed`` and ``request.completed`` share one."""

    endpoint: str
    client_address: str
    org_id: str | None
    presented_key_id: str | None = None
    body_sha256: str | None = None
    body_bytes: int | None = None

    def write(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with these fields after its own."""
        data["endpoint"] = self.endpoint
        data[CLIENT_ADDRESS] = self.client_address
        data["org_id"] = self.org_id
        if self.presented_key_id is not None:
            data["presented_key_id"] = self.presented_key_id
        if self.body_sha256 is not None:
            data["body_sha256"] = self.body_sha256
            data["body_bytes"] = self.body_bytes
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CallFields:
        return cls(
            data.get("endpoint") or "",
            caller_address(data) or "",
            data.get("org_id"),
            data.get("presented_key_id"),
            data.get("body_sha256"),
            data.get("body_bytes"),
        )


class _OfACall:
    """The fields readers take from a data-plane event's call (a mixin: no state)."""

    __slots__ = ()
    call: CallFields

    @property
    def org_id(self) -> str | None:
        return self.call.org_id

    @property
    def client_address(self) -> str | None:
        return self.call.client_address

    @property
    def presented_key_id(self) -> str | None:
        return self.call.presented_key_id


class _NotAnEnd:
    """What only ``request.completed`` records (a mixin: no state)."""

    __slots__ = ()

    @property
    def outcome(self) -> None:
        return None

    @property
    def tokens_in(self) -> None:
        return None

    @property
    def tokens_out(self) -> None:
        return None


# Lists in a record are tuples in a payload: orjson writes both as the same JSON array, so
# ``as_data`` hands its tuples over as they are (no copy).


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAllowed(_OfACall, _NotAnEnd):
    """``request.allowed``: the decision's reason codes and policies, whether the answer
    streams, the upstream's model name and the model's level; the caller's justification,
    trace context, the body fields not forwarded and the content rules that matched, when
    there are any."""

    call: CallFields
    reasons: tuple[str, ...]
    policies: tuple[str, ...]
    stream: bool
    upstream_model: str
    level: str
    justification: str | None = None
    traceparent: str | None = None
    dropped_fields: tuple[str, ...] = ()
    dropped_fields_count: int = 0  # the names kept are bounded; this counts them all
    content_flags: tuple[str, ...] = ()  # content rules that matched (rule ids)

    NAME = EventName.REQUEST_ALLOWED

    @property
    def status(self) -> None:
        return None

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "reasons": self.reasons,
            "policies": self.policies,
            "stream": self.stream,
            "upstream_model": self.upstream_model,
            "level": self.level,
        }
        if self.justification:
            data["justification"] = self.justification
        if self.traceparent is not None:
            data["traceparent"] = self.traceparent
        if self.dropped_fields_count:
            data["dropped_fields"] = self.dropped_fields
            data["dropped_fields_count"] = self.dropped_fields_count
        if self.content_flags:
            data["content_flags"] = self.content_flags
        return self.call.write(data)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RequestAllowed:
        return cls(
            call=CallFields.from_data(data),
            reasons=tuple(data.get("reasons") or ()),
            policies=tuple(data.get("policies") or ()),
            stream=bool(data.get("stream")),
            upstream_model=data.get("upstream_model") or "",
            level=data.get("level") or "",
            justification=data.get("justification"),
            traceparent=data.get("traceparent"),
            dropped_fields=tuple(data.get("dropped_fields") or ()),
            dropped_fields_count=data.get("dropped_fields_count") or 0,
            content_flags=tuple(data.get("content_flags") or ()),
        )


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestDenied(_OfACall, _NotAnEnd):
    """``request.denied``: the status the caller got and the reason codes; the policies
    that decided a refusal by policy; ``by_lock`` when a lock refused the call or cut it
    before it was allowed — the record then names ``lock_id`` (null when the cut had no lock:
    a revocation or a withdrawn standing)."""

    call: CallFields
    status: int
    reasons: tuple[str, ...]
    policies: tuple[str, ...] = ()
    by_lock: bool = False
    lock_id: str | None = None

    NAME = EventName.REQUEST_DENIED

    @property
    def content_flags(self) -> tuple[str, ...]:
        return ()

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "reasons": self.reasons}
        if self.policies:
            data["policies"] = self.policies
        if self.by_lock:
            data["lock_id"] = self.lock_id
        return self.call.write(data)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RequestDenied:
        return cls(
            call=CallFields.from_data(data),
            status=data.get("status") or 0,
            reasons=tuple(data.get("reasons") or ()),
            policies=tuple(data.get("policies") or ()),
            by_lock="lock_id" in data,
            lock_id=data.get("lock_id"),
        )


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted(_OfACall):
    """``request.completed``: how an admitted call ended (``outcome``, ``status``), with the
    reason codes that explain an unusual end, the upstream's own status and the shape of
    the message a 4xx caller was shown, the models a listing named, and — when the call was
    ``cut`` by a lock or a withdrawn standing — the lock (``lock_id``, null when none).

    A ``metered`` call (a forwarded one, not a listing nor a call the log was down for) also
    records the tokens the upstream reported (None when it reported none), the bytes sent to
    the caller, and its duration and time to first byte in milliseconds (None: nothing was
    sent); the others record none of the five.

    The end a surviving process writes for a call whose process died (``ended_elsewhere``)
    names the dead process (``instance``) and itself (``recorded_by``), and keeps the order
    it has always written: the call's endpoint, address and org first, then status, outcome
    and reasons."""

    call: CallFields
    status: int | None
    outcome: str
    reasons: tuple[str, ...] = ()
    upstream_status: int | None = None
    upstream_message: str | None = None
    listed: int | None = None
    cut: bool = False
    lock_id: str | None = None
    usage_flags: tuple[str, ...] = ()
    metered: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    bytes_out: int = 0
    duration_ms: float = 0.0
    ttfb_ms: float | None = None
    instance: str | None = None  # set: ended by another process for this dead one
    recorded_by: str | None = None

    NAME = EventName.REQUEST_COMPLETED

    @property
    def content_flags(self) -> tuple[str, ...]:
        return ()

    def as_data(self) -> dict[str, Any]:
        if self.instance is not None:
            return self._ended_elsewhere()
        # The order the gateway has always written: what explains the end first (a cut's
        # reasons and lock before the usage flags it also saw), then status and outcome.
        data: dict[str, Any] = {}
        if self.upstream_message is not None:
            data["upstream_message"] = self.upstream_message
        if self.listed is not None:
            data["listed"] = self.listed
        if self.cut:
            if self.upstream_status is not None:
                data["upstream_status"] = self.upstream_status
            data["reasons"] = self.reasons
            data["lock_id"] = self.lock_id
            if self.usage_flags:
                data["usage_flags"] = self.usage_flags
        else:
            if self.usage_flags:
                data["usage_flags"] = self.usage_flags
            if self.reasons:
                data["reasons"] = self.reasons
            if self.upstream_status is not None:
                data["upstream_status"] = self.upstream_status
        data["status"] = self.status
        data["outcome"] = self.outcome
        if self.metered:
            data["tokens_in"] = self.tokens_in
            data["tokens_out"] = self.tokens_out
            data["bytes_out"] = self.bytes_out
            data["duration_ms"] = self.duration_ms
            data["ttfb_ms"] = self.ttfb_ms
        return self.call.write(data)

    def _ended_elsewhere(self) -> dict[str, Any]:
        return {
            "endpoint": self.call.endpoint,
            CLIENT_ADDRESS: self.call.client_address,
            "org_id": self.call.org_id,
            "status": self.status,
            "outcome": self.outcome,
            "reasons": self.reasons,
            "instance": self.instance,
            "recorded_by": self.recorded_by,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RequestCompleted:
        metered = "duration_ms" in data
        return cls(
            call=CallFields.from_data(data),
            status=data.get("status"),
            outcome=data.get("outcome") or "",
            reasons=tuple(data.get("reasons") or ()),
            upstream_status=data.get("upstream_status"),
            upstream_message=data.get("upstream_message"),
            listed=data.get("listed"),
            cut="lock_id" in data,
            lock_id=data.get("lock_id"),
            usage_flags=tuple(data.get("usage_flags") or ()),
            metered=metered,
            tokens_in=data.get("tokens_in") if metered else None,
            tokens_out=data.get("tokens_out") if metered else None,
            bytes_out=data.get("bytes_out") or 0 if metered else 0,
            duration_ms=data["duration_ms"] if metered else 0.0,
            ttfb_ms=data.get("ttfb_ms") if metered else None,
            instance=data.get("instance"),
            recorded_by=data.get("recorded_by"),
        )


@dataclass(frozen=True, slots=True)
class Untyped:
    """The data of a record no payload class reads (a name this version does not know, or
    a record missing a key its class requires), read through the same fields (the one
    place such data is read by key)."""

    data: Mapping[str, Any]

    def as_data(self) -> dict[str, Any]:
        return dict(self.data)

    @property
    def org_id(self) -> str | None:
        return self.data.get("org_id")

    @property
    def client_address(self) -> str | None:
        found: str | None = caller_address(self.data)
        return found

    @property
    def status(self) -> int | None:
        return self.data.get("status")

    @property
    def outcome(self) -> str | None:
        return self.data.get("outcome")

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(self.data.get("reasons") or ())

    @property
    def tokens_in(self) -> int | None:
        return self.data.get("tokens_in")

    @property
    def tokens_out(self) -> int | None:
        return self.data.get("tokens_out")

    @property
    def presented_key_id(self) -> str | None:
        return self.data.get("presented_key_id")

    @property
    def content_flags(self) -> tuple[str, ...]:
        return tuple(self.data.get("content_flags") or ())


Payload = RequestAllowed | RequestDenied | RequestCompleted

_DATA_PLANE: tuple[type[Payload], ...] = (RequestAllowed, RequestDenied, RequestCompleted)
PAYLOAD_CLASSES: Mapping[str, type[Payload] | type[payload_base.Payload]] = {
    **{cls.NAME.value: cls for cls in _DATA_PLANE},
    **{cls.NAME.value: cls for cls in payloads_directory.PAYLOADS},
    **{cls.NAME.value: cls for cls in payloads_respond.PAYLOADS},
    **{cls.NAME.value: cls for cls in payloads_access.PAYLOADS},
    **{cls.NAME.value: cls for cls in payloads_admin.PAYLOADS},
    **{cls.NAME.value: cls for cls in payloads_host.PAYLOADS},
    **{cls.NAME.value: cls for cls in payloads_identity.PAYLOADS},
}


def payload_of(name: str, data: Mapping[str, Any]) -> EventFacts:
    """The typed payload of a stored record's ``data`` (``Untyped`` for a name no class
    answers — a record from a newer Garrison — or a record that lacks a key its class
    requires: both still read safely)."""
    cls = PAYLOAD_CLASSES.get(name)
    found: EventFacts | None = None if cls is None else cls.from_data(data)
    return Untyped(data) if found is None else found
