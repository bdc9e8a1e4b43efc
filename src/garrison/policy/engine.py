"""Policy as code: every model call's decision comes from Cedar (via ``cedarpy``).

``CompiledPolicies`` is the schema and the whole policy set — Garrison's base policies plus
the organisation's — parsed and validated once. ``PolicyEngine`` adds the entities of one
directory snapshot (principals, orgs, models), parsed once, and a decision cache keyed by
exactly the inputs a decision depends on: the principal, the model and the context (which
holds only booleans and coarse clock fields). A new snapshot or policy set means a new
engine, so the cache can never serve a decision made under older facts.

Only a decision that is exactly Allow allows. A Deny names the forbid policies that decided
it; their ``@id`` maps to a reason code. Cedar reports evaluation errors as diagnostics, not
exceptions: a decision with errors is a deny with ``policy.error``, and the caller alerts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import cedarpy

from garrison.domain import Model, Principal, Reason
from garrison.errors import BadRequest

NAMESPACE = "Garrison"
ACTION = {"type": f"{NAMESPACE}::Action", "id": "invoke"}
# Decisions kept per engine (one snapshot and policy set). A key is a principal, a model and
# a context; 100,000 covers every pair in a large deployment with room for a few contexts,
# at ~200 bytes each (~20 MB). Past it the cache starts again rather than grow.
DECISION_CACHE_MAX = 100_000
# Organisation policy text: a policy set of a few hundred rules fits with room to spare.
ORG_POLICY_MAX_BYTES = 256 * 1024

# The reason each base forbid policy stands for.
BASE_REASONS: Mapping[str, Reason] = {
    "forbid-clearance-level": Reason.CLEARANCE_LEVEL,
    "forbid-clearance-compartment": Reason.CLEARANCE_COMPARTMENT,
    "forbid-key-network": Reason.CREDENTIAL_NETWORK,
    "forbid-vendor-inactive": Reason.VENDOR_INACTIVE,
    "forbid-vendor-outside-contract": Reason.VENDOR_CONTRACT,
    "forbid-vendor-network": Reason.VENDOR_NETWORK,
    "forbid-vendor-ceiling": Reason.VENDOR_CEILING,
    "forbid-critical-without-grant": Reason.GRANT_REQUIRED,
    "forbid-without-mfa": Reason.MFA_REQUIRED,
    "forbid-person-bearer-key": Reason.PERSON_BEARER_KEY,
    "forbid-missing-justification": Reason.JUSTIFICATION_REQUIRED,
}


class PolicyError(BadRequest):
    """A policy set that does not parse or validate against the schema."""

    code = "invalid_policy"


def _package_text(name: str) -> str:
    return resources.files("garrison.policy").joinpath(name).read_text()


SCHEMA_TEXT = _package_text("garrison.cedarschema")
BASE_POLICIES = _package_text("base.cedar")


@dataclass(frozen=True, slots=True)
class Context:
    """What the gateway computes before asking: hashable, so it is part of the cache key."""

    vendor_active: bool = True
    vendor_in_contract: bool = True
    vendor_network_ok: bool = True
    vendor_ceiling_level: int = 3
    vendor_ceiling_compartments: frozenset[str] = frozenset()
    key_network_ok: bool = True
    grant: bool = False
    mfa_capable: bool = False
    mfa: bool = False
    # Models at or above this level need MFA from a credential that can carry it
    # ([identity] mfa_from_level; restricted by default).
    mfa_from_level: int = 2
    # False when a person's bearer key is used above [identity] people_bearer_keys.
    person_key_ok: bool = True
    justification: bool = False
    hour_utc: int = 0
    weekday: int = 0

    def as_cedar(self) -> dict[str, Any]:
        return {
            "vendor_active": self.vendor_active,
            "vendor_in_contract": self.vendor_in_contract,
            "vendor_network_ok": self.vendor_network_ok,
            "vendor_ceiling_level": self.vendor_ceiling_level,
            "vendor_ceiling_compartments": sorted(self.vendor_ceiling_compartments),
            "key_network_ok": self.key_network_ok,
            "grant": self.grant,
            "mfa_capable": self.mfa_capable,
            "mfa": self.mfa,
            "mfa_from_level": self.mfa_from_level,
            "person_key_ok": self.person_key_ok,
            "justification": self.justification,
            "hour_utc": self.hour_utc,
            "weekday": self.weekday,
        }


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    allowed: bool
    reasons: tuple[Reason, ...]
    # The @id (or Cedar's own id) of every policy that determined the decision.
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


class CompiledPolicies:
    """The schema and the policy set (base + organisation), parsed and validated."""

    def __init__(self, org_text: str = "", *, version: int = 0) -> None:
        if len(org_text.encode()) > ORG_POLICY_MAX_BYTES:
            raise PolicyError(f"the policy set is over {ORG_POLICY_MAX_BYTES // 1024} KiB")
        self.version = version
        self.org_text = org_text
        self.text = BASE_POLICIES + "\n" + org_text
        try:
            self.schema = cedarpy.Schema.from_str(SCHEMA_TEXT)
        except ValueError as exc:  # pragma: no cover - the shipped schema parses
            raise PolicyError(f"schema: {exc}") from None
        result = cedarpy.validate_policies(self.text, self.schema)
        if not result.validation_passed:
            messages = "; ".join(str(e) for e in result.errors[:10]) or "invalid policies"
            raise PolicyError(f"policy set refused: {messages}")
        try:
            self.policies = cedarpy.PolicySet.from_str(self.text)
        except ValueError as exc:
            raise PolicyError(f"policy set refused: {exc}") from None


def principal_entity(principal: Principal, *, vendor: bool) -> dict[str, Any]:
    return {
        "uid": {"type": f"{NAMESPACE}::Principal", "id": principal.id},
        "attrs": {
            "name": principal.name,
            "clearance": int(principal.clearance),
            "compartments": sorted(principal.compartments),
            "kind": principal.kind.value,
            "roles": sorted(principal.roles),
            "vendor": vendor,
        },
        "parents": [{"type": f"{NAMESPACE}::Org", "id": principal.org_id}],
    }


def model_entity(model: Model) -> dict[str, Any]:
    return {
        "uid": {"type": f"{NAMESPACE}::Model", "id": model.id},
        "attrs": {
            "name": model.name,
            "level": int(model.level),
            "compartments": sorted(model.compartments),
            "requires_justification": model.requires_justification,
        },
        "parents": [],
    }


def org_entity(org_id: str, kind: str) -> dict[str, Any]:
    return {
        "uid": {"type": f"{NAMESPACE}::Org", "id": org_id},
        "attrs": {"kind": kind},
        "parents": [],
    }


def build_entities(
    principals: Iterable[Principal],
    models: Iterable[Model],
    orgs: Mapping[str, str],
    vendor_orgs: frozenset[str],
) -> list[dict[str, Any]]:
    """Cedar entities for a directory: ``orgs`` maps org id → kind."""
    entities = [org_entity(org_id, kind) for org_id, kind in orgs.items()]
    entities += [principal_entity(p, vendor=p.org_id in vendor_orgs) for p in principals]
    entities += [model_entity(m) for m in models]
    return entities


_ORDER = {reason: n for n, reason in enumerate(Reason)}


def _reasons(policy_ids: Iterable[str]) -> tuple[Reason, ...]:
    """Reason codes in one fixed order (the declaration order), whatever order Cedar lists
    the policies in."""
    found = {BASE_REASONS.get(pid, Reason.POLICY_FORBID) for pid in policy_ids}
    return tuple(sorted(found, key=_ORDER.__getitem__))


class PolicyEngine:
    def __init__(self, compiled: CompiledPolicies, entities: list[dict[str, Any]]) -> None:
        self.compiled = compiled
        self.entities = cedarpy.Entities.from_json_str(
            json.dumps(entities), compiled.schema, release_gil=True
        )
        self._cache: dict[tuple[str, str, Context], PolicyDecision] = {}

    def evaluate(self, principal_id: str, model_id: str, context: Context) -> PolicyDecision:
        """Ask Cedar (no cache)."""
        request = {
            "principal": {"type": f"{NAMESPACE}::Principal", "id": principal_id},
            "action": ACTION,
            "resource": {"type": f"{NAMESPACE}::Model", "id": model_id},
            "context": context.as_cedar(),
        }
        result = cedarpy.is_authorized(request, self.compiled.policies, self.entities)
        diagnostics = result.diagnostics
        names = diagnostics.id_annotations_by_reason
        policies = tuple(sorted(names.get(pid) or pid for pid in diagnostics.reasons))
        errors = tuple(diagnostics.errors)
        if errors:
            return PolicyDecision(False, (Reason.POLICY_ERROR,), policies, errors)
        if result.decision is cedarpy.Decision.Allow:
            return PolicyDecision(True, (Reason.ALLOWED,), policies)
        if result.decision is cedarpy.Decision.Deny and policies:
            return PolicyDecision(False, _reasons(policies), policies)
        # Deny with no forbid (no permit matched) or NoDecision: deny by default.
        return PolicyDecision(False, (Reason.POLICY_DEFAULT_DENY,), policies)

    def decide(self, principal: Principal, model: Model, context: Context) -> PolicyDecision:
        key = (principal.id, model.id, context)
        found = self._cache.get(key)
        if found is not None:
            return found
        decision = self.evaluate(principal.id, model.id, context)
        if len(self._cache) >= DECISION_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    @property
    def cached(self) -> int:
        return len(self._cache)
