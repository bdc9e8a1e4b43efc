"""The Cedar engine against the reference model, exhaustively on a small world, and the
engine's own contract: validation, org forbids, evaluation errors and the decision cache.

The world: every clearance × every compartment set from {∅, {a}, {b}, {a,b}} × vendor or not
for principals; every level × the same compartment sets × requires_justification for models
(32 × 32 pairs). The contexts are a strength-3 covering array over every context field (each
boolean, the vendor ceiling's level and compartments, the clock fields): every combination of
values of any three fields appears in some context. No base rule reads more than two context
fields, so every rule's whole truth table is met by every principal/model pair.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import cedarpy
import pytest

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
from garrison.errors import BadRequest
from garrison.policy import engine as engine_mod
from garrison.policy.engine import (
    BASE_POLICIES,
    BASE_REASONS,
    ORG_POLICY_MAX_BYTES,
    CompiledPolicies,
    Context,
    PolicyDecision,
    PolicyEngine,
    PolicyError,
    build_entities,
)
from garrison.policy.reference import reference_reasons

COMPARTMENT_SETS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"a"}),
    frozenset({"b"}),
    frozenset({"a", "b"}),
)
INTERNAL_ORG = "org-internal"
VENDOR_ORG = "org-vendor"
ORGS = {INTERNAL_ORG: "internal", VENDOR_ORG: "vendor"}
VENDORS = frozenset({VENDOR_ORG})
POLICY_OF: dict[Reason, str] = {reason: pid for pid, reason in BASE_REASONS.items()}
REASON_ORDER = {reason: n for n, reason in enumerate(Reason)}


def cs_label(cs: frozenset[str]) -> str:
    return "".join(sorted(cs)) or "none"


def make_principal(
    pid: str,
    clearance: Level,
    compartments: frozenset[str] = frozenset(),
    *,
    vendor: bool = False,
) -> Principal:
    return Principal(
        id=pid,
        name=pid,
        org_id=VENDOR_ORG if vendor else INTERNAL_ORG,
        kind=PrincipalKind.HUMAN,
        clearance=clearance,
        compartments=compartments,
        status=Status.ACTIVE,
    )


def make_model(
    mid: str,
    level: Level,
    compartments: frozenset[str] = frozenset(),
    *,
    justification: bool = False,
) -> Model:
    return Model(
        id=mid,
        name=mid,
        upstream_url="http://upstream.invalid/v1",
        upstream_model=mid,
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=level,
        compartments=compartments,
        requires_justification=justification,
    )


PRINCIPALS: tuple[tuple[Principal, bool], ...] = tuple(
    (
        make_principal(
            f"p-{clearance.label}-{cs_label(cs)}-{'vendor' if vendor else 'internal'}",
            clearance,
            cs,
            vendor=vendor,
        ),
        vendor,
    )
    for clearance in Level
    for cs in COMPARTMENT_SETS
    for vendor in (False, True)
)
MODELS: tuple[Model, ...] = tuple(
    make_model(
        f"m-{level.label}-{cs_label(cs)}-{'just' if just else 'free'}",
        level,
        cs,
        justification=just,
    )
    for level in Level
    for cs in COMPARTMENT_SETS
    for just in (False, True)
)

# Every field of Context and the values the exhaustive check gives it.
FACTORS: dict[str, tuple[Any, ...]] = {
    "vendor_active": (True, False),
    "vendor_in_contract": (True, False),
    "vendor_network_ok": (True, False),
    "vendor_ceiling_level": tuple(int(level) for level in Level),
    "vendor_ceiling_compartments": COMPARTMENT_SETS,
    "key_network_ok": (True, False),
    "grant": (True, False),
    "mfa_capable": (True, False),
    "mfa": (True, False),
    "mfa_from_level": (2, 3),
    "person_key_ok": (True, False),
    "justification": (True, False),
    "hour_utc": (0, 23),
    "weekday": (0, 6),
}
STRENGTH = 3


def covering_array(
    factors: Mapping[str, Sequence[Any]], strength: int, seed: int
) -> list[dict[str, Any]]:
    """A strength-``strength`` covering array, greedily (AETG-style) and deterministically:
    rows such that every combination of values of any ``strength`` factors is in some row."""
    names = list(factors)
    rng = random.Random(seed)
    uncovered: set[tuple[tuple[str, Any], ...]] = set()
    for combo in itertools.combinations(names, strength):
        for values in itertools.product(*(range(len(factors[n])) for n in combo)):
            uncovered.add(tuple(zip(combo, values, strict=True)))
    combos = list(itertools.combinations(names, strength))
    combos_with = {n: [c for c in combos if n in c] for n in names}

    def covers(row: dict[str, int]) -> set[tuple[tuple[str, Any], ...]]:
        return {tuple((n, row[n]) for n in combo) for combo in combos} & uncovered

    def score(row: dict[str, int], name: str) -> int:
        return sum(tuple((n, row[n]) for n in c) in uncovered for c in combos_with[name])

    rows: list[dict[str, int]] = []
    while uncovered:
        best: dict[str, int] | None = None
        best_gain: set[tuple[tuple[str, Any], ...]] = set()
        for start in rng.sample(sorted(uncovered), min(12, len(uncovered))):
            row = {n: rng.randrange(len(factors[n])) for n in names}
            row.update(dict(start))
            fixed = {n for n, _ in start}
            # Improve the free factors one at a time.
            for n in rng.sample(names, len(names)):
                if n in fixed:
                    continue
                scores = []
                for v in range(len(factors[n])):
                    row[n] = v
                    scores.append((score(row, n), v))
                row[n] = max(scores)[1]
            gain = covers(row)
            if len(gain) > len(best_gain):
                best, best_gain = dict(row), gain
        assert best is not None
        rows.append(best)
        uncovered -= best_gain
    return [{n: factors[n][i] for n, i in row.items()} for row in rows]


def one_flag_flipped() -> Iterator[Context]:
    """All-clear (every rule satisfied), and all-clear with exactly one field made bad."""
    clear = Context(
        grant=True,
        mfa_capable=True,
        mfa=True,
        justification=True,
        vendor_ceiling_level=3,
        vendor_ceiling_compartments=frozenset({"a", "b"}),
    )
    yield clear
    for field in (
        "vendor_active",
        "vendor_in_contract",
        "vendor_network_ok",
        "key_network_ok",
        "grant",
        "mfa",
        "justification",
    ):
        off: dict[str, Any] = {field: False}
        yield dataclasses.replace(clear, **off)
    yield dataclasses.replace(clear, mfa_capable=False, mfa=False)
    for level in range(3):
        yield dataclasses.replace(clear, vendor_ceiling_level=level)
    for cs in COMPARTMENT_SETS[:3]:
        yield dataclasses.replace(clear, vendor_ceiling_compartments=cs)
    yield Context()  # the defaults
    yield Context(
        vendor_active=False,
        vendor_in_contract=False,
        vendor_network_ok=False,
        vendor_ceiling_level=0,
        key_network_ok=False,
        mfa_capable=True,
    )


COVERING_ROWS = covering_array(FACTORS, STRENGTH, seed=20240611)
CONTEXTS: tuple[Context, ...] = tuple(
    dict.fromkeys([*(Context(**row) for row in COVERING_ROWS), *one_flag_flipped()])
)


def world_engine(org_text: str = "") -> PolicyEngine:
    entities = build_entities([p for p, _ in PRINCIPALS], MODELS, ORGS, VENDORS)
    return PolicyEngine(CompiledPolicies(org_text), entities)


@pytest.fixture(scope="module")
def small_world() -> PolicyEngine:
    return world_engine()


# ── the design itself ──────────────────────────────────────────────────────────────────────
def test_the_contexts_cover_every_combination_of_any_three_fields() -> None:
    names = list(FACTORS)
    assert set(names) == {f.name for f in dataclasses.fields(Context)}
    for combo in itertools.combinations(names, STRENGTH):
        seen = {tuple(getattr(c, n) for n in combo) for c in CONTEXTS}
        assert seen == set(itertools.product(*(FACTORS[n] for n in combo))), combo
    # Small enough to stay fast, and far smaller than the full product (2^8·4·4·2·2 = 16,384).
    assert len(CONTEXTS) < 150


def test_the_world_has_every_combination() -> None:
    assert len(PRINCIPALS) == 4 * 4 * 2
    assert len(MODELS) == 4 * 4 * 2
    assert len({p.id for p, _ in PRINCIPALS}) == len(PRINCIPALS)
    assert len({m.id for m in MODELS}) == len(MODELS)


# ── the exhaustive check ───────────────────────────────────────────────────────────────────
def test_every_cedar_decision_matches_the_reference(small_world: PolicyEngine) -> None:
    checked = 0
    allowed = 0
    reasons_seen: set[Reason] = set()
    mismatches: list[str] = []
    for context in CONTEXTS:
        for principal, vendor in PRINCIPALS:
            for model in MODELS:
                want = reference_reasons(principal, model, context, vendor=vendor)
                got = small_world.evaluate(principal.id, model.id, context)
                checked += 1
                problem = _compare(got, want)
                if problem:
                    mismatches.append(f"{principal.id} → {model.id} under {context}: {problem}")
                    if len(mismatches) >= 10:
                        break
                allowed += got.allowed
                reasons_seen.update(got.reasons)
    assert not mismatches, "\n".join(mismatches)
    assert checked == len(CONTEXTS) * 32 * 32
    # The world exercises both outcomes and every base reason.
    assert 0 < allowed < checked
    assert reasons_seen == {*BASE_REASONS.values(), Reason.ALLOWED}


def _compare(got: PolicyDecision, want: tuple[Reason, ...]) -> str:
    if got.errors:
        return f"evaluation errors {got.errors}"
    if got.allowed != (not want):
        return f"allowed={got.allowed} but the reference says {want}"
    if got.allowed:
        if got.reasons != (Reason.ALLOWED,):
            return f"allowed with reasons {got.reasons}"
        if got.policies != ("permit-dominance",):
            return f"allowed by {got.policies}"
        return ""
    if set(got.reasons) != set(want) or len(got.reasons) != len(want):
        return f"reasons {got.reasons} != reference {want}"
    if list(got.reasons) != sorted(got.reasons, key=REASON_ORDER.__getitem__):
        return f"reasons not in the fixed order: {got.reasons}"
    if got.policies != tuple(sorted(POLICY_OF[r] for r in want)):
        return f"policies {got.policies} do not name the forbids of {want}"
    return ""


def test_the_clock_fields_never_change_a_base_decision(small_world: PolicyEngine) -> None:
    base = Context(grant=True, justification=True)
    for principal, _ in PRINCIPALS[::3]:
        for model in MODELS[::3]:
            first = small_world.evaluate(principal.id, model.id, base)
            for hour, day in ((23, 6), (12, 3)):
                other = dataclasses.replace(base, hour_utc=hour, weekday=day)
                assert small_world.evaluate(principal.id, model.id, other) == first


# ── validation ─────────────────────────────────────────────────────────────────────────────
def test_the_base_policies_alone_compile() -> None:
    compiled = CompiledPolicies("", version=7)
    assert compiled.version == 7
    assert compiled.text.startswith(BASE_POLICIES)


def test_an_unknown_attribute_is_refused_with_cedars_message() -> None:
    text = 'permit (principal, action, resource) when { principal.department == "x" };'
    with pytest.raises(PolicyError) as caught:
        CompiledPolicies(text)
    message = str(caught.value)
    assert message.startswith("policy set refused:")
    assert "`department`" in message
    assert "Garrison::Principal" in message
    assert "not found" in message
    assert isinstance(caught.value, BadRequest)
    assert caught.value.code == "invalid_policy"
    assert caught.value.status == 400


def test_an_unknown_context_field_is_refused() -> None:
    text = "forbid (principal, action, resource) when { context.on_call };"
    with pytest.raises(PolicyError, match="on_call"):
        CompiledPolicies(text)


def test_a_type_error_is_refused() -> None:
    text = 'forbid (principal, action, resource) when { principal.clearance == "high" };'
    with pytest.raises(PolicyError, match="policy set refused"):
        CompiledPolicies(text)
    with pytest.raises(PolicyError, match="policy set refused"):
        CompiledPolicies("forbid (principal, action, resource) when { context.weekday };")


def test_an_unknown_entity_type_is_refused() -> None:
    text = 'forbid (principal in Garrison::Team::"red", action, resource);'
    with pytest.raises(PolicyError, match="Team"):
        CompiledPolicies(text)


def test_a_syntax_error_is_refused_with_cedars_message() -> None:
    with pytest.raises(PolicyError) as caught:
        CompiledPolicies("permit (principal action, resource);")
    message = str(caught.value)
    assert message.startswith("policy set refused:")
    assert "unexpected token" in message


def test_a_policy_set_over_the_limit_is_refused() -> None:
    filler = "// " + "x" * 1000 + "\n"
    text = filler * (ORG_POLICY_MAX_BYTES // len(filler) + 1)
    with pytest.raises(PolicyError, match="KiB"):
        CompiledPolicies(text)
    # Exactly at the limit is fine (comments only).
    at_limit = "//" + "x" * (ORG_POLICY_MAX_BYTES - 2)
    assert len(at_limit.encode()) == ORG_POLICY_MAX_BYTES
    CompiledPolicies(at_limit)


# ── organisation policies ──────────────────────────────────────────────────────────────────
ALICE = make_principal("alice", Level.RESTRICTED, frozenset({"a"}))
CAROL = make_principal("carol", Level.INTERNAL)
VICTOR = make_principal("victor", Level.RESTRICTED, vendor=True)
ASSISTANT = make_model("assistant", Level.INTERNAL)
SECRET = make_model("secret", Level.RESTRICTED, frozenset({"a"}))
CRITICAL = make_model("critical", Level.CRITICAL)


def org_engine(org_text: str = "") -> PolicyEngine:
    entities = build_entities(
        [ALICE, CAROL, VICTOR], [ASSISTANT, SECRET, CRITICAL], ORGS, frozenset({VENDOR_ORG})
    )
    return PolicyEngine(CompiledPolicies(org_text), entities)


WEEKENDS = """
@id("no-weekends")
forbid (principal, action == Garrison::Action::"invoke", resource)
when { context.weekday >= 5 };
"""


def test_an_org_forbid_names_its_id_and_reason() -> None:
    engine = org_engine(WEEKENDS)
    saturday = Context(weekday=5)
    denied = engine.evaluate("alice", "assistant", saturday)
    assert denied == PolicyDecision(False, (Reason.POLICY_FORBID,), ("no-weekends",))
    monday = engine.evaluate("alice", "assistant", Context(weekday=0))
    assert monday.allowed
    assert monday.policies == ("permit-dominance",)


def test_an_org_forbid_and_base_forbids_are_reported_together_in_order() -> None:
    engine = org_engine(WEEKENDS)
    decision = engine.evaluate("carol", "secret", Context(weekday=6, key_network_ok=False))
    assert not decision.allowed
    assert decision.reasons == (
        Reason.CREDENTIAL_NETWORK,
        Reason.CLEARANCE_LEVEL,
        Reason.CLEARANCE_COMPARTMENT,
        Reason.POLICY_FORBID,
    )
    assert decision.policies == (
        "forbid-clearance-compartment",
        "forbid-clearance-level",
        "forbid-key-network",
        "no-weekends",
    )


def test_an_org_forbid_without_an_id_is_named_by_cedars_id() -> None:
    engine = org_engine('forbid (principal, action, resource) when { principal.name == "alice" };')
    decision = engine.evaluate("alice", "assistant", Context())
    assert decision.reasons == (Reason.POLICY_FORBID,)
    (name,) = decision.policies
    assert name.startswith("policy")
    assert engine.evaluate("carol", "assistant", Context()).allowed


def test_an_org_forbid_can_use_the_org_hierarchy_and_model_attributes() -> None:
    text = """
    @id("vendors-no-justified-models")
    forbid (principal in Garrison::Org::"org-vendor", action, resource)
    when { resource.level >= 1 };
    """
    engine = org_engine(text)
    decision = engine.evaluate("victor", "assistant", Context())
    assert decision.reasons == (Reason.POLICY_FORBID,)
    assert decision.policies == ("vendors-no-justified-models",)
    assert engine.evaluate("alice", "assistant", Context()).allowed


def test_an_org_permit_never_overrides_a_base_forbid() -> None:
    engine = org_engine('@id("everyone") permit (principal, action, resource);')
    low = engine.evaluate("carol", "secret", Context())
    assert not low.allowed
    assert low.reasons == (Reason.CLEARANCE_LEVEL, Reason.CLEARANCE_COMPARTMENT)
    critical = engine.evaluate("alice", "critical", Context(grant=False))
    assert not critical.allowed
    assert Reason.GRANT_REQUIRED in critical.reasons
    over_ceiling = engine.evaluate("victor", "assistant", Context(vendor_ceiling_level=0))
    assert over_ceiling.reasons == (Reason.VENDOR_CEILING,)


def test_nothing_permitting_is_a_default_deny() -> None:
    # The base forbids mirror the base permit, so the default deny is not reachable through
    # CompiledPolicies; swap in a policy set without the permit to see the engine map it.
    engine = org_engine()
    without_permit = BASE_POLICIES.replace('@id("permit-dominance")\npermit', '@id("x")\nforbid')
    assert without_permit != BASE_POLICIES
    engine.compiled.policies = cedarpy.PolicySet.from_str(
        without_permit.replace("principal.clearance >= resource.level &&", "false &&")
    )
    decision = engine.evaluate("alice", "assistant", Context())
    assert decision == PolicyDecision(False, (Reason.POLICY_DEFAULT_DENY,), ())
    # A forbid that fires still names itself.
    named = engine.evaluate("alice", "assistant", Context(key_network_ok=False))
    assert named.reasons == (Reason.CREDENTIAL_NETWORK,)


# ── evaluation errors ──────────────────────────────────────────────────────────────────────
def test_an_unknown_principal_is_a_deny_with_policy_error() -> None:
    engine = org_engine()
    decision = engine.evaluate("ghost", "assistant", Context())
    assert not decision.allowed
    assert decision.reasons == (Reason.POLICY_ERROR,)
    assert decision.errors
    assert any("does not exist" in e and "ghost" in e for e in decision.errors)


def test_an_unknown_model_is_a_deny_with_policy_error() -> None:
    engine = org_engine()
    decision = engine.evaluate("alice", "no-such-model", Context(grant=True))
    assert not decision.allowed
    assert decision.reasons == (Reason.POLICY_ERROR,)
    assert any("no-such-model" in e for e in decision.errors)


def test_an_error_wins_over_a_forbid_that_fired() -> None:
    engine = org_engine()
    # forbid-key-network reads only the context: it fires even for an unknown principal.
    decision = engine.evaluate("ghost", "assistant", Context(key_network_ok=False))
    assert not decision.allowed
    assert decision.reasons == (Reason.POLICY_ERROR,)
    assert "forbid-key-network" in decision.policies
    assert decision.errors


def test_a_runtime_error_in_an_org_policy_denies_an_otherwise_allowed_call() -> None:
    text = """
    @id("overflow")
    forbid (principal, action, resource)
    when { principal.clearance * 9223372036854775807 > 1 };
    """
    engine = org_engine(text)
    assert org_engine().evaluate("alice", "assistant", Context()).allowed
    decision = engine.evaluate("alice", "assistant", Context())
    assert not decision.allowed
    assert decision.reasons == (Reason.POLICY_ERROR,)
    assert decision.errors


# ── the decision cache ─────────────────────────────────────────────────────────────────────
def test_a_fresh_engine_has_an_empty_cache() -> None:
    engine = org_engine()
    assert engine.cached == 0
    engine.evaluate("alice", "assistant", Context())
    assert engine.cached == 0  # evaluate never caches


def test_the_cache_returns_the_same_object_for_the_same_key() -> None:
    engine = org_engine()
    first = engine.decide(ALICE, ASSISTANT, Context())
    again = engine.decide(ALICE, ASSISTANT, Context())
    assert again is first
    assert engine.cached == 1
    # An equal context built separately is the same key.
    assert engine.decide(ALICE, ASSISTANT, Context(vendor_ceiling_compartments=frozenset())) is (
        first
    )
    other = engine.decide(ALICE, ASSISTANT, Context(key_network_ok=False))
    assert other is not first
    assert not other.allowed
    assert engine.cached == 2
    # Another principal or model is another key.
    engine.decide(CAROL, ASSISTANT, Context())
    engine.decide(ALICE, SECRET, Context())
    assert engine.cached == 4
    # The cached decisions equal fresh evaluations.
    assert first == engine.evaluate("alice", "assistant", Context())


def test_the_cache_is_per_engine() -> None:
    first = org_engine()
    first.decide(ALICE, ASSISTANT, Context())
    second = org_engine(WEEKENDS)
    assert second.cached == 0
    saturday = Context(weekday=5)
    assert first.decide(ALICE, ASSISTANT, saturday).allowed
    assert not second.decide(ALICE, ASSISTANT, saturday).allowed


def test_the_cache_keys_on_ids_only_so_a_new_snapshot_needs_a_new_engine() -> None:
    # The engine's entities are fixed at construction: a Principal object with new facts but
    # the same id is decided under the entities the engine was built with.
    engine = org_engine()
    promoted = dataclasses.replace(CAROL, clearance=Level.RESTRICTED, compartments=frozenset("a"))
    assert not engine.decide(promoted, SECRET, Context()).allowed
    rebuilt = PolicyEngine(
        engine.compiled,
        build_entities([promoted], [SECRET], ORGS, frozenset()),
    )
    assert rebuilt.decide(promoted, SECRET, Context()).allowed


def test_overflowing_the_cache_starts_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "DECISION_CACHE_MAX", 3)
    engine = org_engine()
    contexts = [Context(hour_utc=h) for h in range(5)]
    first = engine.decide(ALICE, ASSISTANT, contexts[0])
    engine.decide(ALICE, ASSISTANT, contexts[1])
    engine.decide(ALICE, ASSISTANT, contexts[2])
    assert engine.cached == 3
    # A cached key does not count as new.
    assert engine.decide(ALICE, ASSISTANT, contexts[0]) is first
    assert engine.cached == 3
    engine.decide(ALICE, ASSISTANT, contexts[3])
    assert engine.cached == 1  # cleared, then the new decision kept
    again = engine.decide(ALICE, ASSISTANT, contexts[0])
    assert again == first
    assert again is not first  # decided afresh after the clear
    assert engine.cached == 2
    for context in contexts:
        engine.decide(CAROL, SECRET, context)
    assert engine.cached in range(1, 4)


# ── the pieces ─────────────────────────────────────────────────────────────────────────────
def test_context_as_cedar_is_plain_json() -> None:
    context = Context(vendor_ceiling_compartments=frozenset({"b", "a"}), hour_utc=5, weekday=2)
    cedar = context.as_cedar()
    assert cedar["vendor_ceiling_compartments"] == ["a", "b"]
    assert set(cedar) == {f.name for f in dataclasses.fields(Context)}
    assert hash(context) == hash(
        Context(vendor_ceiling_compartments=frozenset({"a", "b"}), hour_utc=5, weekday=2)
    )


def test_build_entities_marks_vendors_and_parents() -> None:
    entities = build_entities([ALICE, VICTOR], [SECRET], ORGS, frozenset({VENDOR_ORG}))
    by_id = {e["uid"]["id"]: e for e in entities}
    assert by_id["alice"]["attrs"]["vendor"] is False
    assert by_id["victor"]["attrs"]["vendor"] is True
    assert by_id["victor"]["parents"] == [{"type": "Garrison::Org", "id": VENDOR_ORG}]
    assert by_id[VENDOR_ORG]["attrs"] == {"kind": "vendor"}
    assert by_id["secret"]["attrs"] == {
        "name": "secret",
        "level": 2,
        "compartments": ["a"],
        "requires_justification": False,
    }
