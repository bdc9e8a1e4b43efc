"""Reading the copied columns back from a record (``garrison.audit.columns``): the batch
path agrees with a whole-record parse, whatever the strings hold."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from garrison.audit import AuditEvent, EventName
from garrison.audit.columns import DERIVED_COLUMNS, differing, record_columns
from garrison.audit.verify import verify_log

_text = st.one_of(st.none(), st.text(max_size=30))


def _whole(record: bytes) -> tuple[object, ...]:
    value = orjson.loads(record)
    return tuple(value.get(name) for name in DERIVED_COLUMNS)


@given(
    st.lists(
        st.tuples(_text, _text, _text, _text, st.floats(0, 2e9), st.dictionaries(st.text(), _text)),
        min_size=1,
        max_size=20,
    )
)
def test_the_columns_read_from_records_are_the_records_own_fields(
    fields: list[tuple[str | None, str | None, str | None, str | None, float, dict[str, object]]],
) -> None:
    records = [
        AuditEvent(
            EventName.REQUEST_DENIED,
            at=at,
            actor=actor,
            request_id=request_id,
            principal_id=principal,
            credential_id=credential,
            data=data,
        ).encode(i)
        for i, (actor, request_id, principal, credential, at, data) in enumerate(fields)
    ]
    assert record_columns(records) == [_whole(r) for r in records]


def test_strings_holding_the_cut_marks_do_not_move_the_cut() -> None:
    tricky = ',"data":{"x":1},"i":7,'
    event = AuditEvent(
        EventName.REQUEST_ALLOWED,
        at=5.0,
        actor=tricky,
        credential_id=tricky,
        principal_id=tricky,
        model=tricky,
        data={"note": tricky},
    )
    record = event.encode(3)
    assert record_columns([record]) == [(5.0, "request.allowed", None, tricky, tricky, tricky)]


def test_a_record_that_is_not_an_event_has_no_columns_and_does_not_spoil_its_batch() -> None:
    good = AuditEvent(EventName.REQUEST_ALLOWED, at=1.0, request_id="r").encode(0)
    assert record_columns([good, b"[1, 2]", b"garbage"]) == [
        (1.0, "request.allowed", "r", None, None, None),
        None,
        None,
    ]


def test_a_number_stored_as_text_differs_and_a_whole_number_stored_as_real_does_not() -> None:
    want = (12, "request.allowed", None, None, None, None)
    assert differing(want, (12.0, "request.allowed", None, None, None, None)) == []
    assert differing(want, ("12", "request.allowed", None, None, None, None)) == ["at"]
    assert differing(want, (12, "request.allowed", None, "prn_x", None, None)) == ["principal_id"]


def test_verify_log_checks_columns_only_where_rows_carry_them() -> None:
    events = [
        AuditEvent(EventName.REQUEST_ALLOWED, at=float(i), principal_id="prn_a") for i in range(4)
    ]
    records = [e.encode(i) for i, e in enumerate(events)]
    plain = [(i + 1, r, None) for i, r in enumerate(records)]
    indexed = [
        (i + 1, r, None, e.at, e.name.value, None, "prn_a" if i != 2 else "prn_b", None, None)
        for i, (e, r) in enumerate(zip(events, records, strict=True))
    ]
    assert verify_log(plain, [], {}).ok
    report = verify_log(indexed, [], {})
    assert [(p.kind, p.index) for p in report.problems] == [("column_mismatch", 2)]
    assert "row seq 3: column(s) principal_id differ" in report.problems[0].detail
