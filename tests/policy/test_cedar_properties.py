"""Property tests of the Cedar engine on random small directories and contexts: the safety
rules never allow what they must not, and the decision cache never differs from Cedar."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from unittest import mock

from hypothesis import HealthCheck, given, settings
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
from garrison.policy import engine as engine_mod
from garrison.policy.engine import (
    CompiledPolicies,
    Context,
    PolicyDecision,
    PolicyEngine,
    build_entities,
)
from garrison.policy.reference import reference_reasons

COMPARTMENTS = ("a", "b", "c")
INTERNAL_ORG = "org-internal"
VENDOR_ORG = "org-vendor"
ORGS = {INTERNAL_ORG: "internal", VENDOR_ORG: "vendor"}
# Compiled once: the schema and policies do not change between examples.
BASE = CompiledPolicies("")
# An organisation that permits everything: it must change nothing the base forbids.
PERMIT_ALL = CompiledPolicies('@id("permit-all") permit (principal, action, resource);')

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

compartment_sets = st.frozensets(st.sampled_from(COMPARTMENTS))
levels = st.sampled_from(list(Level))
contexts = st.builds(
    Context,
    vendor_active=st.booleans(),
    vendor_in_contract=st.booleans(),
    vendor_network_ok=st.booleans(),
    vendor_ceiling_level=st.integers(0, 3),
    vendor_ceiling_compartments=compartment_sets,
    key_network_ok=st.booleans(),
    grant=st.booleans(),
    mfa_capable=st.booleans(),
    mfa=st.booleans(),
    mfa_from_level=st.integers(0, 4),
    person_key_ok=st.booleans(),
    justification=st.booleans(),
    hour_utc=st.integers(0, 23),
    weekday=st.integers(0, 6),
)


@dataclass(frozen=True)
class Directory:
    principals: tuple[Principal, ...]
    models: tuple[Model, ...]

    def vendor(self, principal: Principal) -> bool:
        return principal.org_id == VENDOR_ORG

    def engine(self, compiled: CompiledPolicies = BASE) -> PolicyEngine:
        entities = build_entities(self.principals, self.models, ORGS, frozenset({VENDOR_ORG}))
        return PolicyEngine(compiled, entities)


@st.composite
def principals(draw: st.DrawFn, pid: str, vendor: bool | None = None) -> Principal:
    is_vendor = draw(st.booleans()) if vendor is None else vendor
    return Principal(
        id=pid,
        name=pid,
        org_id=VENDOR_ORG if is_vendor else INTERNAL_ORG,
        kind=draw(st.sampled_from(list(PrincipalKind))),
        clearance=draw(levels),
        compartments=draw(compartment_sets),
        status=Status.ACTIVE,
        roles=draw(st.frozensets(st.sampled_from(("approver", "admin")))),
    )


@st.composite
def models(draw: st.DrawFn, mid: str) -> Model:
    return Model(
        id=mid,
        name=mid,
        upstream_url="http://upstream.invalid/v1",
        upstream_model=mid,
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=draw(levels),
        compartments=draw(compartment_sets),
        requires_justification=draw(st.booleans()),
    )


@st.composite
def directories(draw: st.DrawFn, vendor: bool | None = None) -> Directory:
    n_principals = draw(st.integers(1, 4))
    n_models = draw(st.integers(1, 4))
    return Directory(
        tuple(draw(principals(f"p{i}", vendor)) for i in range(n_principals)),
        tuple(draw(models(f"m{i}")) for i in range(n_models)),
    )


def dominates(principal: Principal, model: Model) -> bool:
    return principal.clearance >= model.level and model.compartments <= principal.compartments


def everything_else_clear(context: Context) -> Context:
    """The context with every rule but dominance and the ceiling satisfied."""
    return dataclasses.replace(
        context,
        vendor_active=True,
        vendor_in_contract=True,
        vendor_network_ok=True,
        key_network_ok=True,
        grant=True,
        mfa_capable=True,
        mfa=True,
        person_key_ok=True,
        justification=True,
    )


# ── safety ─────────────────────────────────────────────────────────────────────────────────
@PROPERTY
@given(directories(), st.lists(contexts, min_size=1, max_size=4))
def test_no_principal_without_dominance_is_ever_allowed(
    directory: Directory, ctxs: list[Context]
) -> None:
    for compiled in (BASE, PERMIT_ALL):
        engine = directory.engine(compiled)
        for context in [*ctxs, *(everything_else_clear(c) for c in ctxs)]:
            for p in directory.principals:
                for m in directory.models:
                    decision = engine.evaluate(p.id, m.id, context)
                    assert not decision.errors
                    if not dominates(p, m):
                        assert not decision.allowed
                        assert {Reason.CLEARANCE_LEVEL, Reason.CLEARANCE_COMPARTMENT} & set(
                            decision.reasons
                        )


@PROPERTY
@given(directories(vendor=True), contexts)
def test_a_vendor_is_never_allowed_above_its_ceiling_even_with_a_grant(
    directory: Directory, context: Context
) -> None:
    clear = everything_else_clear(context)
    for compiled in (BASE, PERMIT_ALL):
        engine = directory.engine(compiled)
        for p in directory.principals:
            for m in directory.models:
                above = m.level > clear.vendor_ceiling_level or not (
                    m.compartments <= clear.vendor_ceiling_compartments
                )
                decision = engine.evaluate(p.id, m.id, clear)
                if above:
                    assert not decision.allowed
                    assert Reason.VENDOR_CEILING in decision.reasons
                    assert "forbid-vendor-ceiling" in decision.policies
                else:
                    # Within the ceiling and with dominance, the grant suffices.
                    assert decision.allowed == dominates(p, m)


@PROPERTY
@given(directories(), contexts)
def test_an_expired_grant_a_lapsed_contract_or_a_foreign_network_never_allows(
    directory: Directory, context: Context
) -> None:
    clear = everything_else_clear(context)
    no_grant = dataclasses.replace(clear, grant=False)
    no_contract = dataclasses.replace(clear, vendor_in_contract=False)
    bad_key_network = dataclasses.replace(clear, key_network_ok=False)
    bad_vendor_network = dataclasses.replace(clear, vendor_network_ok=False)
    inactive = dataclasses.replace(clear, vendor_active=False)
    for compiled in (BASE, PERMIT_ALL):
        engine = directory.engine(compiled)
        for p in directory.principals:
            vendor = directory.vendor(p)
            for m in directory.models:
                if m.level == Level.CRITICAL:
                    decision = engine.evaluate(p.id, m.id, no_grant)
                    assert not decision.allowed
                    assert Reason.GRANT_REQUIRED in decision.reasons
                decision = engine.evaluate(p.id, m.id, bad_key_network)
                assert not decision.allowed
                assert Reason.CREDENTIAL_NETWORK in decision.reasons
                if vendor:
                    for bad, reason in (
                        (no_contract, Reason.VENDOR_CONTRACT),
                        (bad_vendor_network, Reason.VENDOR_NETWORK),
                        (inactive, Reason.VENDOR_INACTIVE),
                    ):
                        decision = engine.evaluate(p.id, m.id, bad)
                        assert not decision.allowed
                        assert reason in decision.reasons
                else:
                    # The vendor terms do not apply to an internal principal.
                    for bad in (no_contract, bad_vendor_network, inactive):
                        assert engine.evaluate(p.id, m.id, bad) == engine.evaluate(
                            p.id, m.id, clear
                        )


@PROPERTY
@given(directories(), st.lists(contexts, min_size=1, max_size=3))
def test_cedar_agrees_with_the_reference_on_random_directories(
    directory: Directory, ctxs: list[Context]
) -> None:
    engine = directory.engine()
    for context in ctxs:
        for p in directory.principals:
            for m in directory.models:
                want = reference_reasons(p, m, context, vendor=directory.vendor(p))
                got = engine.evaluate(p.id, m.id, context)
                assert got.allowed == (not want)
                assert set(got.reasons) == (set(want) or {Reason.ALLOWED})


@PROPERTY
@given(directories(), contexts)
def test_a_model_at_the_mfa_level_needs_mfa_only_when_the_credential_can_carry_it(
    directory: Directory, context: Context
) -> None:
    engine = directory.engine()
    clear = everything_else_clear(context)
    for p in directory.principals:
        for m in directory.models:
            with_mfa = engine.evaluate(p.id, m.id, clear)
            api_key = engine.evaluate(
                p.id, m.id, dataclasses.replace(clear, mfa_capable=False, mfa=False)
            )
            assert api_key == with_mfa
            no_mfa = engine.evaluate(p.id, m.id, dataclasses.replace(clear, mfa=False))
            if m.level >= context.mfa_from_level:
                assert not no_mfa.allowed
                assert Reason.MFA_REQUIRED in no_mfa.reasons
            else:
                assert no_mfa == with_mfa


# ── the cache ──────────────────────────────────────────────────────────────────────────────
queries = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    min_size=1,
    max_size=60,
)


@PROPERTY
@given(directories(), st.lists(contexts, min_size=1, max_size=4), queries)
def test_decide_never_differs_from_a_fresh_evaluate(
    directory: Directory, ctxs: list[Context], calls: list[tuple[int, int, int]]
) -> None:
    engine = directory.engine()
    fresh = directory.engine()
    first_answer: dict[tuple[str, str, Context], PolicyDecision] = {}
    for pi, mi, ci in calls:
        p = directory.principals[pi % len(directory.principals)]
        m = directory.models[mi % len(directory.models)]
        context = ctxs[ci % len(ctxs)]
        decision = engine.decide(p, m, context)
        assert decision == fresh.evaluate(p.id, m.id, context)
        assert decision == engine.evaluate(p.id, m.id, context)
        key = (p.id, m.id, context)
        # The same key is answered by the same cached object every time.
        assert first_answer.setdefault(key, decision) is decision
    assert engine.cached == len(first_answer)
    assert fresh.cached == 0
    # And once more, all of them, in reverse order.
    for (pid, mid, context), decision in reversed(list(first_answer.items())):
        p = next(x for x in directory.principals if x.id == pid)
        m = next(x for x in directory.models if x.id == mid)
        assert engine.decide(p, m, context) is decision
        assert decision == fresh.evaluate(pid, mid, context)


@PROPERTY
@given(directories(), st.lists(contexts, min_size=2, max_size=6), queries, st.integers(1, 5))
def test_decide_stays_correct_across_cache_overflows(
    directory: Directory,
    ctxs: list[Context],
    calls: list[tuple[int, int, int]],
    limit: int,
) -> None:
    engine = directory.engine()
    with mock.patch.object(engine_mod, "DECISION_CACHE_MAX", limit):
        for pi, mi, ci in calls:
            p = directory.principals[pi % len(directory.principals)]
            m = directory.models[mi % len(directory.models)]
            context = ctxs[ci % len(ctxs)]
            decision = engine.decide(p, m, context)
            assert decision == engine.evaluate(p.id, m.id, context)
            assert engine.cached in range(1, limit + 1)
            assert engine.decide(p, m, context) is decision


@PROPERTY
@given(directories(), contexts)
def test_a_persons_key_above_its_level_is_refused_whatever_else_holds(
    directory: Directory, context: Context
) -> None:
    engine = directory.engine(PERMIT_ALL)
    refused = dataclasses.replace(everything_else_clear(context), person_key_ok=False)
    for p in directory.principals:
        for m in directory.models:
            decision = engine.evaluate(p.id, m.id, refused)
            assert not decision.allowed
            assert Reason.PERSON_BEARER_KEY in decision.reasons
