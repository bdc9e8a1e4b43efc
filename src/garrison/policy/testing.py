"""Organisation policies as files, and policy tests an organisation keeps in its own CI.

A policy directory holds ``*.cedar`` files; the set is their concatenation in file-name
order. A test file (TOML) names the policies, a small world and the expected decisions:

    policies = "policies"              # a directory or a .cedar file, relative to this file

    [principals.alice]
    clearance = "restricted"           # public | internal | restricted | critical
    compartments = ["cyber"]
    vendor = false                     # optional; also kind = "service", roles = [...]

    [models.cyber-model]
    level = "restricted"
    compartments = ["cyber"]           # optional; also requires_justification = true

    [[cases]]
    principal = "alice"
    model = "cyber-model"
    expect = "allow"                   # or "deny"
    context = { grant = true }         # optional: any field of policy.engine.Context
    reasons = ["clearance.level"]      # optional: the exact reason codes of a denial
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garrison.domain import Level, Model, Principal, PrincipalKind, Status, UpstreamApi
from garrison.domain.types import AuthStyle
from garrison.errors import BadRequest
from garrison.policy.engine import CompiledPolicies, Context, PolicyEngine, build_entities

# Files in a policy directory: more than this is a mistake (or the wrong directory).
POLICY_FILES_MAX = 200


def read_policy_dir(path: Path) -> str:
    """The organisation policy text of a ``.cedar`` file or a directory of them."""
    if path.is_file():
        return path.read_text()
    if not path.is_dir():
        raise BadRequest(f"{path} is neither a .cedar file nor a directory")
    files = sorted(path.glob("*.cedar"))
    odd = [f.name for f in files if not f.is_file()]
    if odd:
        raise BadRequest(f"{path}: {', '.join(odd)} is not a file")
    if len(files) > POLICY_FILES_MAX:
        raise BadRequest(f"{path} holds more than {POLICY_FILES_MAX} .cedar files")
    return "\n".join(f"// ── {f.name}\n{f.read_text()}" for f in files)


@dataclass(frozen=True, slots=True)
class CaseResult:
    principal: str
    model: str
    expect: str
    got: str
    reasons: tuple[str, ...]
    policies: tuple[str, ...]
    passed: bool
    note: str = ""


def _level(value: Any, where: str) -> Level:
    try:
        return Level.parse(str(value))
    except ValueError as exc:
        raise BadRequest(f"{where}: {exc}") from None


def _strings(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{where}: expected a list of strings")
    return frozenset(value)


def _table(value: Any, where: str, known: frozenset[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: expected a table")
    if known is not None:
        unknown = sorted(set(value) - known)
        if unknown:
            raise BadRequest(
                f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
    return value


# The keys a policy test file and its tables may hold; anything else is a typo, refused.
_FILE_KEYS = frozenset({"policies", "principals", "models", "cases"})
_PRINCIPAL_KEYS = frozenset({"vendor", "kind", "clearance", "compartments", "roles"})
_MODEL_KEYS = frozenset({"level", "compartments", "requires_justification"})
_CASE_KEYS = frozenset({"principal", "model", "expect", "context", "reasons"})


def _context(values: Any, where: str) -> Context:
    if values is None:
        return Context()
    if not isinstance(values, dict):
        raise BadRequest(f"{where}: context must be a table")
    values = dict(values)
    fields = {f.name for f in dataclasses.fields(Context)}
    unknown = set(values) - fields
    if unknown:
        raise BadRequest(f"{where}: unknown context field(s) {', '.join(sorted(unknown))}")
    for name, value in list(values.items()):
        here = f"{where}.context.{name}"
        if name == "vendor_ceiling_compartments":
            values[name] = _strings(value, here)
        elif name == "vendor_ceiling_level":
            level = int(_level(value, here)) if isinstance(value, str) else value
            if not isinstance(level, int) or isinstance(level, bool):
                raise BadRequest(f"{here}: expected a level")
            values[name] = level
        elif name in ("hour_utc", "weekday"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise BadRequest(f"{here}: expected a whole number")
        elif not isinstance(value, bool):
            raise BadRequest(f"{here}: expected true or false")
    return Context(**values)


def run_policy_tests(path: Path) -> list[CaseResult]:
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadRequest(f"{path}: {exc}") from None
    _table(spec, str(path), _FILE_KEYS)
    org_text = ""
    if "policies" in spec:
        org_text = read_policy_dir((path.parent / str(spec["policies"])).resolve())
    compiled = CompiledPolicies(org_text)
    principals: dict[str, Principal] = {}
    vendors: set[str] = set()
    for name, raw in _table(spec.get("principals") or {}, "principals").items():
        where = f"principals.{name}"
        p = _table(raw, f"{path}: {where}", _PRINCIPAL_KEYS)
        vendor = p.get("vendor", False)
        if not isinstance(vendor, bool):
            raise BadRequest(f"{where}.vendor: expected true or false")
        org = "vendor-org" if vendor else "internal-org"
        if vendor:
            vendors.add(org)
        kind = p.get("kind", "human")
        if kind not in ("human", "service"):
            raise BadRequest(f"{where}.kind: expected human or service")
        principals[name] = Principal(
            id=name,
            name=name,
            org_id=org,
            kind=PrincipalKind(kind),
            clearance=_level(p.get("clearance", "internal"), where),
            compartments=_strings(p.get("compartments", []), f"{where}.compartments"),
            status=Status.ACTIVE,
            roles=_strings(p.get("roles", []), f"{where}.roles"),
        )
    models: dict[str, Model] = {}
    for name, raw_model in _table(spec.get("models") or {}, "models").items():
        m = _table(raw_model, f"{path}: models.{name}", _MODEL_KEYS)
        justification = m.get("requires_justification", False)
        if not isinstance(justification, bool):
            raise BadRequest(f"models.{name}.requires_justification: expected true or false")
        models[name] = Model(
            id=name,
            name=name,
            upstream_url="http://test.invalid",
            upstream_model=name,
            api=UpstreamApi.OPENAI,
            auth_style=AuthStyle.NONE,
            level=_level(m.get("level", "internal"), f"models.{name}"),
            compartments=_strings(m.get("compartments", []), f"models.{name}.compartments"),
            requires_justification=justification,
        )
    orgs = {"internal-org": "internal", "vendor-org": "vendor"}
    engine = PolicyEngine(
        compiled,
        build_entities(principals.values(), models.values(), orgs, frozenset(vendors)),
    )
    results = []
    cases = spec.get("cases") or []
    if not isinstance(cases, list):
        raise BadRequest("cases: expected a list of tables ([[cases]])")
    for n, raw_case in enumerate(cases, start=1):
        where = f"cases[{n}]"
        case = _table(raw_case, f"{path}: {where}", _CASE_KEYS)
        who, what = case.get("principal"), case.get("model")
        if not isinstance(who, str) or not isinstance(what, str):
            raise BadRequest(f"{where}: principal and model must be names")
        if who not in principals or what not in models:
            raise BadRequest(f"{where}: principal {who!r} or model {what!r} is not defined")
        expect = case.get("expect")
        if expect not in ("allow", "deny"):
            raise BadRequest(f"{where}: expect must be allow or deny")
        decision = engine.evaluate(who, what, _context(case.get("context"), where))
        got = "allow" if decision.allowed else "deny"
        reasons = tuple(r.value for r in decision.reasons)
        passed = got == expect
        note = ""
        wanted = case.get("reasons")
        if wanted is not None:
            wanted = sorted(_strings(wanted, f"{where}.reasons"))
        if passed and wanted is not None and wanted != sorted(reasons):
            passed = False
            note = f"expected reasons {sorted(wanted)}"
        results.append(CaseResult(who, what, expect, got, reasons, decision.policies, passed, note))
    return results
