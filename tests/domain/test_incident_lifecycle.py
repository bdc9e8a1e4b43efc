"""The incident lifecycle as a transition table: every pair of statuses is either allowed or
refused, exactly as the documented lifecycle says (open → contained / resolved; contained →
resolved / open; resolved → closed / open; closed is final)."""

from __future__ import annotations

import itertools
import re

import pytest

from garrison.domain.incidents import (
    INCIDENT_TRANSITIONS,
    IllegalIncidentTransition,
    IncidentStatus,
    check_incident_transition,
)
from garrison.errors import BadRequest

S = IncidentStatus

DOCUMENTED = {
    S.OPEN: {S.CONTAINED, S.RESOLVED},
    S.CONTAINED: {S.RESOLVED, S.OPEN},
    S.RESOLVED: {S.CLOSED, S.OPEN},
    S.CLOSED: set(),
}

ALL_PAIRS = list(itertools.product(IncidentStatus, IncidentStatus))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in DOCUMENTED[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in DOCUMENTED[a]]


def _id(pair: tuple[IncidentStatus, IncidentStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_statuses_are_the_four_documented_ones() -> None:
    assert [s.value for s in IncidentStatus] == ["open", "contained", "resolved", "closed"]


def test_transition_table_is_the_documented_lifecycle() -> None:
    assert {k: set(v) for k, v in INCIDENT_TRANSITIONS.items()} == DOCUMENTED


def test_transition_table_covers_every_status_and_only_statuses() -> None:
    assert set(INCIDENT_TRANSITIONS) == set(IncidentStatus)
    for targets in INCIDENT_TRANSITIONS.values():
        assert all(isinstance(t, IncidentStatus) for t in targets)


def test_the_table_has_sixteen_pairs_six_of_them_legal() -> None:
    assert len(ALL_PAIRS) == 16
    assert sorted(_id(p) for p in LEGAL) == [
        "contained->open",
        "contained->resolved",
        "open->contained",
        "open->resolved",
        "resolved->closed",
        "resolved->open",
    ]
    assert len(ILLEGAL) == 10


@pytest.mark.parametrize(("current", "target"), LEGAL, ids=[_id(p) for p in LEGAL])
def test_every_legal_transition_is_accepted(
    current: IncidentStatus, target: IncidentStatus
) -> None:
    check_incident_transition(current, target)  # raises on refusal


@pytest.mark.parametrize(("current", "target"), ILLEGAL, ids=[_id(p) for p in ILLEGAL])
def test_every_other_pair_is_refused_naming_the_rule_and_the_allowed_targets(
    current: IncidentStatus, target: IncidentStatus
) -> None:
    allowed = ", ".join(sorted(s.value for s in DOCUMENTED[current])) or "none"
    expected = (
        f"rule incident-lifecycle: an incident cannot go from {current.value} to "
        f"{target.value} (from {current.value}: {allowed})"
    )
    with pytest.raises(IllegalIncidentTransition, match=re.escape(expected)) as info:
        check_incident_transition(current, target)
    assert str(info.value) == expected
    assert info.value.detail == expected


def test_no_status_may_transition_to_itself() -> None:
    for s in IncidentStatus:
        with pytest.raises(IllegalIncidentTransition):
            check_incident_transition(s, s)


def test_closed_is_final() -> None:
    for target in IncidentStatus:
        with pytest.raises(IllegalIncidentTransition, match=r"\(from closed: none\)"):
            check_incident_transition(S.CLOSED, target)


def test_open_cannot_be_closed_without_being_resolved_first() -> None:
    with pytest.raises(IllegalIncidentTransition, match="from open to closed"):
        check_incident_transition(S.OPEN, S.CLOSED)
    with pytest.raises(IllegalIncidentTransition, match="from contained to closed"):
        check_incident_transition(S.CONTAINED, S.CLOSED)
    check_incident_transition(S.OPEN, S.RESOLVED)
    check_incident_transition(S.RESOLVED, S.CLOSED)


def test_every_status_but_closed_is_reachable_again_from_open() -> None:
    """Walk the graph from open: every status is reachable, and open is reachable from
    every status except closed (an incident can be reopened until it is closed)."""

    def reachable(start: IncidentStatus) -> set[IncidentStatus]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in INCIDENT_TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reachable(S.OPEN) == set(IncidentStatus)
    for s in IncidentStatus:
        assert (S.OPEN in reachable(s)) is (s is not S.CLOSED)


def test_illegal_transition_is_a_bad_request_with_its_own_code() -> None:
    with pytest.raises(BadRequest) as info:
        check_incident_transition(S.CLOSED, S.OPEN)
    assert isinstance(info.value, IllegalIncidentTransition)
    assert info.value.status == 400
    assert info.value.code == "illegal_transition"
