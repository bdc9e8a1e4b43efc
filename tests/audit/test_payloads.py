"""Typed event payloads: a payload written into a record reads back as itself, and the
record is byte for byte the one its data dictionary gives (the encoding is unchanged)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.audit import AuditEvent, decode
from garrison.audit.payloads import (
    CallFields,
    Payload,
    RequestAllowed,
    RequestCompleted,
    RequestDenied,
    Untyped,
    payload_of,
)

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


def test_an_event_with_no_payload_class_is_read_through_the_same_fields() -> None:
    data = {"address": "10.0.0.9", "reasons": ["lock.active"], "presented_key_id": "gk_1"}
    facts = payload_of("admin.denied", data)
    assert facts == Untyped(data)
    assert facts.client_address == "10.0.0.9"  # an encoding-version-1 record's key
    assert facts.reasons == ("lock.active",) and facts.presented_key_id == "gk_1"
    assert facts.status is None and facts.tokens_in is None and facts.content_flags == ()


def test_a_completed_record_another_process_wrote_reads_back_without_its_extra_keys() -> None:
    """A dead process's call, ended by another (``gateway.outcome.ended_elsewhere``): the
    payload holds what its class names; the record keeps the rest."""
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
