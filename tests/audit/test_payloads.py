"""Typed event payloads: a payload written into a record reads back as itself, and the
record is byte for byte the one its data dictionary gives (the encoding is unchanged)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.audit import AuditEvent, EventName, decode
from garrison.audit.payloads import (
    CallFields,
    Payload,
    RequestAllowed,
    RequestCompleted,
    RequestDenied,
    Untyped,
    payload_of,
)
from garrison.gateway.outcome import ended_elsewhere

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_words = st.lists(_text, max_size=3).map(tuple)
_ints = st.integers(min_value=-(2**53), max_value=2**53)
_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def _call_fields(draw: st.DrawFn) -> CallFields:
    body = draw(st.one_of(st.none(), st.tuples(_text, _ints)))
    return CallFields(
        endpoint=draw(_text),
        client_address=draw(_text),
        org_id=draw(st.one_of(st.none(), _text)),
        presented_key_id=draw(st.one_of(st.none(), _text)),
        body_sha256=None if body is None else body[0],
        body_bytes=None if body is None else body[1],
    )


@st.composite
def _allowed(draw: st.DrawFn) -> RequestAllowed:
    dropped = draw(_words)
    return RequestAllowed(
        reasons=draw(_words),
        policies=draw(_words),
        stream=draw(st.booleans()),
        upstream_model=draw(_text),
        level=draw(_text),
        justification=draw(st.one_of(st.none(), _text.filter(bool))),
        traceparent=draw(st.one_of(st.none(), _text)),
        dropped_fields=dropped,
        dropped_fields_count=len(dropped) + draw(st.integers(0, 5)) if dropped else 0,
        content_flags=draw(_words),
        call=draw(_call_fields()),
    )


@st.composite
def _denied(draw: st.DrawFn) -> RequestDenied:
    by_lock = draw(st.booleans())
    return RequestDenied(
        status=draw(st.integers(400, 599)),
        reasons=draw(_words),
        policies=draw(_words),
        by_lock=by_lock,
        lock_id=draw(st.one_of(st.none(), _text)) if by_lock else None,
        call=draw(_call_fields()),
    )


@st.composite
def _completed(draw: st.DrawFn) -> RequestCompleted:
    cut = draw(st.booleans())
    metered = draw(st.booleans())
    return RequestCompleted(
        status=draw(st.one_of(st.none(), st.integers(100, 599))),
        outcome=draw(_text),
        reasons=draw(_words),
        upstream_status=draw(st.one_of(st.none(), st.integers(100, 599))),
        upstream_message=draw(st.one_of(st.none(), _text)),
        listed=draw(st.one_of(st.none(), _ints)),
        cut=cut,
        lock_id=draw(st.one_of(st.none(), _text)) if cut else None,
        usage_flags=draw(_words),
        metered=metered,
        tokens_in=draw(st.one_of(st.none(), _ints)) if metered else None,
        tokens_out=draw(st.one_of(st.none(), _ints)) if metered else None,
        bytes_out=draw(_ints) if metered else 0,
        duration_ms=draw(_floats) if metered else 0.0,
        ttfb_ms=draw(st.one_of(st.none(), _floats)) if metered else None,
        call=draw(_call_fields()),
    )


_payloads = st.one_of(_allowed(), _denied(), _completed())


def _event(payload: Payload, *, typed: bool) -> AuditEvent:
    return AuditEvent(
        payload.NAME,
        at=1_700_000_000.5,
        actor="p-1",
        request_id="req-1",
        principal_id="p-1",
        credential_id="k-1",
        model="m",
        data=payload.as_data(),
        payload=payload if typed else None,
    )


@settings(max_examples=300, deadline=None)
@given(_payloads, st.integers(0, 2**40))
def test_a_payload_reads_back_as_itself(payload: Payload, index: int) -> None:
    record = decode(_event(payload, typed=True).encode(index))
    assert payload_of(record["name"], record["data"]) == payload


@settings(max_examples=300, deadline=None)
@given(_payloads, st.integers(0, 2**40))
def test_the_record_of_a_payload_is_the_record_of_its_dictionary(
    payload: Payload, index: int
) -> None:
    typed = _event(payload, typed=True)
    plain = _event(payload, typed=False)
    assert typed.encode(index) == plain.encode(index)
    assert typed.prepare().encode(index) == plain.encode(index)
    assert typed.unindexed() == plain.unindexed()


def test_a_record_its_class_cannot_read_is_read_through_the_same_fields() -> None:
    """An encoding-version-1 record (the caller's ``address``, not ``client_address``)
    lacks a key its class requires: it reads as ``Untyped``, its facts intact."""
    data = {"address": "10.0.0.9", "reasons": ["lock.active"], "presented_key_id": "gk_1"}
    facts = payload_of("admin.denied", data)
    assert facts == Untyped(data)
    assert facts.client_address == "10.0.0.9"  # an encoding-version-1 record's key
    assert facts.reasons == ("lock.active",) and facts.presented_key_id == "gk_1"
    assert facts.status is None and facts.tokens_in is None and facts.content_flags == ()


def test_a_version_1_canary_read_keeps_its_address() -> None:
    """``admin.read`` names an address only for a canary's call, optionally: a version-1
    record's ``address`` is read (as ``Untyped``), not dropped by the class."""
    data = {"method": "GET", "path": "/admin/v1/keys", "address": "10.0.0.9"}
    assert payload_of("admin.read", data).client_address == "10.0.0.9"
    now = {"method": "GET", "path": "/admin/v1/keys", "client_address": "10.0.0.9"}
    assert payload_of("admin.read", now).client_address == "10.0.0.9"
    assert payload_of("admin.read", {**now, "client_address": None}).client_address is None


def test_a_record_another_process_ended_reads_back_and_writes_the_same_bytes() -> None:
    """A dead process's call, ended by another (``gateway.outcome.ended_elsewhere``): the
    payload names the dead process and its recorder, and writes the record's own order."""
    data = {
        "endpoint": "chat",
        "client_address": "10.0.0.9",
        "org_id": "o",
        "status": None,
        "outcome": "process_ended",
        "reasons": ["gateway.process_ended"],
        "instance": "gw1",
        "recorded_by": "gw2",
    }
    facts = payload_of("request.completed", data)
    assert isinstance(facts, RequestCompleted)
    assert facts.outcome == "process_ended" and facts.status is None and not facts.metered
    assert facts.reasons == ("gateway.process_ended",)
    assert (facts.instance, facts.recorded_by) == ("gw1", "gw2")
    assert orjson.dumps(facts.as_data()) == orjson.dumps(data)


@dataclasses.dataclass(frozen=True)
class _Unfinished:
    request_id: str
    principal_id: str | None
    credential_id: str | None
    model: str | None
    data: dict[str, Any]


def test_ended_elsewhere_writes_the_bytes_its_dictionary_wrote() -> None:
    """``ended_elsewhere`` builds a ``RequestCompleted``; its data is, byte for byte, the
    dictionary it built by hand before (golden: the order below), from an allowed record's
    call fields (a body's hash and a presented key id are not repeated)."""
    allowed = RequestAllowed(
        call=CallFields("chat", "10.0.0.9", "org_1", "gk_1", "ab" * 32, 12),
        reasons=("policy.allow",),
        policies=("p",),
        stream=False,
        upstream_model="up",
        level="internal",
    ).as_data()
    event = ended_elsewhere(
        _Unfinished("req_1", "prn_1", "gk_2", "gpt", allowed),
        instance="gw1",
        recorded_by="gw2",
        at=1.0,
    )
    golden = (
        b'{"endpoint":"chat","client_address":"10.0.0.9","org_id":"org_1","status":null,'
        b'"outcome":"process_ended","reasons":["gateway.process_ended"],"instance":"gw1",'
        b'"recorded_by":"gw2"}'
    )
    assert orjson.dumps(event.data) == golden
    assert event.payload is not None and orjson.dumps(event.payload.as_data()) == golden
    assert event.name is EventName.REQUEST_COMPLETED
