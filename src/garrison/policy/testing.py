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


def _context(values: Any, where: str) -> Context:
    if values is None:
        return Context()
    if not isinstance(values, dict):
        raise BadRequest(f"{where}: context must be a table")
    known = {f.name for f in dataclasses.fields(Context)}
    unknown = set(values) - known
    if unknown:
        raise BadRequest(f"{where}: unknown context field(s) {', '.join(sorted(unknown))}")
    if "vendor_ceiling_compartments" in values:
        values = {
            **values,
            "vendor_ceiling_compartments": frozenset(values["vendor_ceiling_compartments"]),
        }
    if "vendor_ceiling_level" in values and isinstance(values["vendor_ceiling_level"], str):
        values = {
            **values,
            "vendor_ceiling_level": int(_level(values["vendor_ceiling_level"], where)),
        }
    return Context(**values)


def run_policy_tests(path: Path) -> list[CaseResult]:
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadRequest(f"{path}: {exc}") from None
    org_text = ""
    if "policies" in spec:
        org_text = read_policy_dir((path.parent / str(spec["policies"])).resolve())
    compiled = CompiledPolicies(org_text)
    principals: dict[str, Principal] = {}
    vendors: set[str] = set()
    for name, p in (spec.get("principals") or {}).items():
        where = f"principals.{name}"
        org = "vendor-org" if p.get("vendor") else "internal-org"
        if p.get("vendor"):
            vendors.add(org)
        principals[name] = Principal(
            id=name,
            name=name,
            org_id=org,
            kind=PrincipalKind(p.get("kind", "human")),
            clearance=_level(p.get("clearance", "internal"), where),
            compartments=frozenset(p.get("compartments", [])),
            status=Status.ACTIVE,
            roles=frozenset(p.get("roles", [])),
        )
    models: dict[str, Model] = {}
    for name, m in (spec.get("models") or {}).items():
        models[name] = Model(
            id=name,
            name=name,
            upstream_url="http://test.invalid",
            upstream_model=name,
            api=UpstreamApi.OPENAI,
            auth_style=AuthStyle.NONE,
            level=_level(m.get("level", "internal"), f"models.{name}"),
            compartments=frozenset(m.get("compartments", [])),
            requires_justification=bool(m.get("requires_justification", False)),
        )
    orgs = {"internal-org": "internal", "vendor-org": "vendor"}
    engine = PolicyEngine(
        compiled,
        build_entities(principals.values(), models.values(), orgs, frozenset(vendors)),
    )
    results = []
    for n, case in enumerate(spec.get("cases") or [], start=1):
        where = f"cases[{n}]"
        who, what = case.get("principal"), case.get("model")
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
        if passed and wanted is not None and sorted(wanted) != sorted(reasons):
            passed = False
            note = f"expected reasons {sorted(wanted)}"
        results.append(CaseResult(who, what, expect, got, reasons, decision.policies, passed, note))
    return results
