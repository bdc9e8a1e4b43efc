"""Call outcomes: the enum's values are the strings records, metrics and readers have always
used, and ``upstream_{status}`` is one member plus the upstream's status."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.domain.outcomes import CallOutcome, encoded, parse

# Every outcome string a record has ever carried (tests, detectors and reports read these).
RECORDED = {
    "ok",
    "client_closed",
    "cut",
    "shutdown",
    "upstream_error",
    "upstream_timeout",
    "upstream_bad_json",
    "upstream_redirect",
    "response_budget",
    "call_deadline",
    "stream_limit",
    "audit_unavailable",
    "audit_record_invalid",
    "process_ended",
}


def test_every_fixed_outcome_is_spelled_as_records_have_it() -> None:
    fixed = {encoded(o) for o in CallOutcome if o is not CallOutcome.UPSTREAM_STATUS}
    assert fixed == RECORDED


@pytest.mark.parametrize("text", sorted(RECORDED))
def test_a_recorded_outcome_reads_back_as_its_member(text: str) -> None:
    outcome, status = parse(text)
    assert (outcome.value, status) == (text, None)
    assert encoded(outcome) == text


@given(st.integers(min_value=100, max_value=599))
def test_an_upstream_status_round_trips_through_its_spelling(status: int) -> None:
    text = encoded(CallOutcome.UPSTREAM_STATUS, status)
    assert text == f"upstream_{status}"
    assert parse(text) == (CallOutcome.UPSTREAM_STATUS, status)


@pytest.mark.parametrize("status", [None, 99, 600, -1])
def test_an_upstream_status_outcome_needs_a_real_status(status: int | None) -> None:
    with pytest.raises(ValueError):
        encoded(CallOutcome.UPSTREAM_STATUS, status)


@pytest.mark.parametrize(
    "text", ["", "upstream_", "upstream_99", "upstream_4000", "upstream_4x0", "nope"]
)
def test_a_string_that_names_no_outcome_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)
