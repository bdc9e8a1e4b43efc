"""Tests for ``garrison.policy.decide``: clearance dominance, deny by default."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from garrison.domain import (
    AuthStyle,
    Level,
    Model,
    Principal,
    PrincipalKind,
    Reason,
    Status,
    UpstreamApi,
)
from garrison.policy import Decision, decide

COMPARTMENTS = ("alpha", "bravo", "charlie", "delta", "echo")


def principal(clearance: Level, compartments: frozenset[str] = frozenset()) -> Principal:
    return Principal(
        id="p-1",
        name="alice",
        org_id="o-1",
        kind=PrincipalKind.HUMAN,
        clearance=clearance,
        compartments=compartments,
        status=Status.ACTIVE,
    )


def model(level: Level, compartments: frozenset[str] = frozenset()) -> Model:
    return Model(
        id="m-1",
        name="assistant",
        upstream_url="http://upstream.invalid/v1",
        upstream_model="llama-3-8b",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=level,
        compartments=compartments,
    )


levels = st.sampled_from(list(Level))
compartment_sets = st.frozensets(st.sampled_from(COMPARTMENTS))


def test_equal_level_and_no_compartments_is_allowed() -> None:
    assert decide(principal(Level.RESTRICTED), model(Level.RESTRICTED)).allowed


def test_higher_clearance_is_allowed() -> None:
    assert decide(principal(Level.CRITICAL), model(Level.PUBLIC)).allowed


def test_lower_clearance_is_refused() -> None:
    assert not decide(principal(Level.INTERNAL), model(Level.RESTRICTED)).allowed


def test_lower_clearance_names_the_level_rule_only() -> None:
    decision = decide(principal(Level.INTERNAL), model(Level.RESTRICTED))
    assert decision.reasons == (Reason.CLEARANCE_LEVEL,)


def test_missing_compartment_is_refused_despite_high_clearance() -> None:
    decision = decide(principal(Level.CRITICAL), model(Level.PUBLIC, frozenset({"alpha"})))
    assert not decision.allowed


def test_missing_compartment_names_the_compartment_rule_only() -> None:
    decision = decide(
        principal(Level.CRITICAL, frozenset({"bravo"})), model(Level.PUBLIC, frozenset({"alpha"}))
    )
    assert decision.reasons == (Reason.CLEARANCE_COMPARTMENT,)


def test_one_missing_compartment_of_several_is_refused() -> None:
    decision = decide(
        principal(Level.CRITICAL, frozenset({"alpha", "bravo"})),
        model(Level.PUBLIC, frozenset({"alpha", "bravo", "charlie"})),
    )
    assert not decision.allowed


def test_extra_principal_compartments_do_not_hurt() -> None:
    decision = decide(
        principal(Level.PUBLIC, frozenset({"alpha", "bravo"})),
        model(Level.PUBLIC, frozenset({"alpha"})),
    )
    assert decision.allowed


def test_both_rules_failing_names_both() -> None:
    decision = decide(principal(Level.PUBLIC), model(Level.CRITICAL, frozenset({"alpha"})))
    assert set(decision.reasons) == {Reason.CLEARANCE_LEVEL, Reason.CLEARANCE_COMPARTMENT}


def test_allowed_decision_gives_the_allowed_reason_only() -> None:
    decision = decide(principal(Level.PUBLIC), model(Level.PUBLIC))
    assert decision == Decision(True, (Reason.ALLOWED,))


@given(levels, compartment_sets, levels, compartment_sets)
def test_allowed_iff_clearance_dominates_and_compartments_are_covered(
    clearance: Level, held: frozenset[str], level: Level, needed: frozenset[str]
) -> None:
    decision = decide(principal(clearance, held), model(level, needed))
    assert decision.allowed == (int(clearance) >= int(level) and needed.issubset(held))


@given(levels, compartment_sets, levels, compartment_sets)
def test_reasons_name_exactly_the_failing_rules(
    clearance: Level, held: frozenset[str], level: Level, needed: frozenset[str]
) -> None:
    decision = decide(principal(clearance, held), model(level, needed))
    expected: set[Reason] = set()
    if int(clearance) < int(level):
        expected.add(Reason.CLEARANCE_LEVEL)
    if not needed.issubset(held):
        expected.add(Reason.CLEARANCE_COMPARTMENT)
    assert set(decision.reasons) == (expected or {Reason.ALLOWED})


@given(levels, compartment_sets, levels, compartment_sets)
def test_refusal_never_carries_the_allowed_reason(
    clearance: Level, held: frozenset[str], level: Level, needed: frozenset[str]
) -> None:
    decision = decide(principal(clearance, held), model(level, needed))
    assert decision.allowed == (Reason.ALLOWED in decision.reasons)


@given(levels, compartment_sets, levels, compartment_sets)
def test_raising_clearance_and_adding_compartments_never_revokes_access(
    clearance: Level, held: frozenset[str], level: Level, needed: frozenset[str]
) -> None:
    before = decide(principal(clearance, held), model(level, needed))
    after = decide(principal(Level.CRITICAL, held | frozenset(COMPARTMENTS)), model(level, needed))
    assert after.allowed or not before.allowed
