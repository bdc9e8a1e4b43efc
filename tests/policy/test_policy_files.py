"""Organisation policies as files: ``read_policy_dir``, ``run_policy_tests`` on TOML test
tables, and ``garrison policy check|test`` as subprocesses (offline: no gateway)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from garrison.errors import BadRequest
from garrison.policy import testing as testing_mod
from garrison.policy.engine import CompiledPolicies, PolicyError
from garrison.policy.testing import CaseResult, read_policy_dir, run_policy_tests

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
SUBPROCESS_TIMEOUT_S = 60

WEEKENDS = """@id("no-weekends")
forbid (principal, action == Garrison::Action::"invoke", resource)
when { context.weekday >= 5 };
"""
NO_SERVICES = """@id("no-services-on-critical")
forbid (principal, action, resource)
when { principal.kind == "service" && resource.level >= 3 };
"""

WORLD = """
[principals.alice]
clearance = "restricted"
compartments = ["cyber"]

[principals.carol]
clearance = "internal"

[principals.victor]
clearance = "restricted"
compartments = ["cyber"]
vendor = true

[principals.robot]
clearance = "critical"
kind = "service"
roles = ["batch"]

[models.assistant]
level = "internal"

[models.cyber-model]
level = "restricted"
compartments = ["cyber"]

[models.vault]
level = "critical"

[models.audited]
level = "internal"
requires_justification = true
"""

PASSING_CASES = """
[[cases]]
principal = "alice"
model = "cyber-model"
expect = "allow"

[[cases]]
principal = "carol"
model = "cyber-model"
expect = "deny"
reasons = ["clearance.compartment", "clearance.level"]

[[cases]]
principal = "alice"
model = "assistant"
expect = "deny"
context = { weekday = 6 }
reasons = ["policy.forbid"]

[[cases]]
principal = "victor"
model = "cyber-model"
expect = "deny"
context = { vendor_ceiling_level = "internal", vendor_ceiling_compartments = ["cyber"] }
reasons = ["vendor.ceiling"]

[[cases]]
principal = "victor"
model = "cyber-model"
expect = "allow"
context = { vendor_ceiling_level = "restricted", vendor_ceiling_compartments = ["cyber"] }

[[cases]]
principal = "robot"
model = "vault"
expect = "deny"
context = { grant = true }
reasons = ["policy.forbid"]

[[cases]]
principal = "carol"
model = "audited"
expect = "deny"
reasons = ["justification.required"]

[[cases]]
principal = "carol"
model = "audited"
expect = "allow"
context = { justification = true }
"""


def write_policies(root: Path) -> Path:
    policies = root / "policies"
    policies.mkdir()
    (policies / "10-weekends.cedar").write_text(WEEKENDS)
    (policies / "20-services.cedar").write_text(NO_SERVICES)
    (policies / "README.md").write_text("not a policy: ignored")
    return policies


def write_tests(root: Path, cases: str, *, world: str = WORLD, policies: bool = True) -> Path:
    header = 'policies = "policies"\n' if policies else ""
    if policies and not (root / "policies").exists():
        write_policies(root)
    path = root / "policy-tests.toml"
    path.write_text(header + world + cases)
    return path


def case(principal: str, model: str, expect: str, extra: str = "") -> str:
    return (
        f'\n[[cases]]\nprincipal = "{principal}"\nmodel = "{model}"\nexpect = "{expect}"\n{extra}'
    )


def garrison(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [*GARRISON, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


# ── read_policy_dir ────────────────────────────────────────────────────────────────────────
def test_a_directory_is_its_cedar_files_in_name_order_with_headers(tmp_path: Path) -> None:
    (tmp_path / "b.cedar").write_text("// bee\n")
    (tmp_path / "a.cedar").write_text("// ay\n")
    (tmp_path / "10-first.cedar").write_text("// ten\n")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "c.cedar.bak").write_text("ignored")
    text = read_policy_dir(tmp_path)
    assert text == (
        "// ── 10-first.cedar\n// ten\n\n// ── a.cedar\n// ay\n\n// ── b.cedar\n// bee\n"
    )
    assert "ignored" not in text


def test_the_header_comments_keep_the_set_valid(tmp_path: Path) -> None:
    policies = write_policies(tmp_path)
    text = read_policy_dir(policies)
    assert text.index("// ── 10-weekends.cedar") < text.index('@id("no-weekends")')
    assert text.index("// ── 20-services.cedar") < text.index('@id("no-services-on-critical")')
    assert text.index("no-weekends") < text.index("no-services-on-critical")
    compiled = CompiledPolicies(text)
    assert compiled.org_text == text


def test_a_file_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "only.cedar"
    path.write_text(WEEKENDS)
    assert read_policy_dir(path) == WEEKENDS


def test_an_empty_directory_is_no_policies(tmp_path: Path) -> None:
    assert read_policy_dir(tmp_path) == ""
    CompiledPolicies(read_policy_dir(tmp_path))


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"neither a \.cedar file nor a directory"):
        read_policy_dir(tmp_path / "nowhere")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "policies.cedar"
    os.mkfifo(fifo)
    with pytest.raises(BadRequest, match="neither"):
        read_policy_dir(fifo)


def test_a_directory_named_like_a_policy_file_is_refused(tmp_path: Path) -> None:
    # A non-file entry matching *.cedar inside the directory must be refused cleanly (a
    # BadRequest), not crash the reader with an OSError.
    (tmp_path / "a.cedar").write_text(WEEKENDS)
    (tmp_path / "archive.cedar").mkdir()
    with pytest.raises(BadRequest):
        read_policy_dir(tmp_path)


def test_too_many_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_mod, "POLICY_FILES_MAX", 2)
    for name in ("a", "b"):
        (tmp_path / f"{name}.cedar").write_text("")
    read_policy_dir(tmp_path)
    (tmp_path / "c.cedar").write_text("")
    with pytest.raises(BadRequest, match="more than 2"):
        read_policy_dir(tmp_path)


# ── run_policy_tests ───────────────────────────────────────────────────────────────────────
def test_a_table_that_holds_passes(tmp_path: Path) -> None:
    results = run_policy_tests(write_tests(tmp_path, PASSING_CASES))
    assert len(results) == 8
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    first = results[0]
    assert first == CaseResult(
        "alice", "cyber-model", "allow", "allow", ("allowed",), ("permit-dominance",), True
    )
    weekend = results[2]
    assert weekend.policies == ("no-weekends",)
    robot = results[5]
    assert robot.policies == ("no-services-on-critical",)


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    cases = case("carol", "cyber-model", "allow") + case("alice", "cyber-model", "deny")
    results = run_policy_tests(write_tests(tmp_path, cases))
    assert [(r.expect, r.got, r.passed) for r in results] == [
        ("allow", "deny", False),
        ("deny", "allow", False),
    ]
    assert results[0].reasons == ("clearance.level", "clearance.compartment")


def test_a_reasons_mismatch_fails_with_a_note(tmp_path: Path) -> None:
    cases = case("carol", "cyber-model", "deny", 'reasons = ["clearance.level"]')
    (result,) = run_policy_tests(write_tests(tmp_path, cases))
    assert result.got == "deny"
    assert not result.passed
    assert result.note == "expected reasons ['clearance.level']"


def test_reasons_are_compared_as_a_set(tmp_path: Path) -> None:
    cases = case(
        "carol",
        "cyber-model",
        "deny",
        'reasons = ["clearance.level", "clearance.compartment"]',
    )
    (result,) = run_policy_tests(write_tests(tmp_path, cases))
    assert result.passed


def test_without_a_policies_key_the_base_policies_alone_apply(tmp_path: Path) -> None:
    cases = case("alice", "assistant", "allow", "context = { weekday = 6 }")
    (result,) = run_policy_tests(write_tests(tmp_path, cases, policies=False))
    assert result.passed
    assert result.policies == ("permit-dominance",)


def test_a_single_policy_file_may_be_named(tmp_path: Path) -> None:
    (tmp_path / "one.cedar").write_text(WEEKENDS)
    path = tmp_path / "t.toml"
    path.write_text(
        'policies = "one.cedar"\n'
        + WORLD
        + case("alice", "assistant", "deny", "context = { weekday = 5 }")
    )
    (result,) = run_policy_tests(path)
    assert result.passed
    assert result.policies == ("no-weekends",)


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        (case("mallory", "assistant", "allow"), "'mallory'"),
        (case("alice", "no-such-model", "allow"), "'no-such-model'"),
        (case("alice", "assistant", "allow", "context = { on_call = true }"), "on_call"),
        (case("alice", "assistant", "maybe"), "expect must be allow or deny"),
        (case("alice", "assistant", "allow", "context = 3"), "context must be a table"),
        (
            case("alice", "assistant", "allow", 'context = { vendor_ceiling_level = "top" }'),
            "unknown level",
        ),
    ],
)
def test_an_invalid_case_is_refused(tmp_path: Path, cases: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        run_policy_tests(write_tests(tmp_path, cases))


@pytest.mark.parametrize(
    ("world", "cases", "where"),
    [
        (WORLD, case("alice", "assistant", "allow", 'expected = "deny"'), "cases[1]"),
        ('[principals.zed]\nclearence = "internal"\n', case("zed", "m", "deny"), "principals.zed"),
        ('[models.m]\nlevle = "internal"\n', case("alice", "m", "deny"), "models.m"),
        ('polices = "x"\n' + WORLD, case("alice", "assistant", "allow"), "policy-tests.toml"),
    ],
)
def test_an_unknown_key_is_refused_naming_it_and_the_file(
    tmp_path: Path, world: str, cases: str, where: str
) -> None:
    with pytest.raises(BadRequest, match=r"unknown key") as info:
        run_policy_tests(write_tests(tmp_path, cases, world=world))
    message = str(info.value)
    assert str(tmp_path / "policy-tests.toml") in message and where in message
    assert any(k in message for k in ("'expected'", "'clearence'", "'levle'", "'polices'"))


def test_an_unknown_level_is_refused(tmp_path: Path) -> None:
    world = '[principals.zed]\nclearance = "cosmic"\n[models.m]\nlevel = "internal"\n'
    with pytest.raises(BadRequest, match=r"principals\.zed: unknown level 'cosmic'"):
        run_policy_tests(write_tests(tmp_path, case("zed", "m", "deny"), world=world))


def test_a_toml_syntax_error_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[principals.alice\n")
    with pytest.raises(BadRequest, match=str(path)):
        run_policy_tests(path)


def test_a_missing_policies_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('policies = "nowhere"\n' + WORLD)
    with pytest.raises(BadRequest, match="neither"):
        run_policy_tests(path)


def test_an_invalid_policy_is_refused_with_cedars_message(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bad.cedar").write_text(
        'forbid (principal, action, resource) when { principal.department == "ops" };'
    )
    with pytest.raises(PolicyError, match="department"):
        run_policy_tests(write_tests(tmp_path, case("alice", "assistant", "allow")))


@pytest.mark.parametrize(
    "world",
    [
        # A string where a list belongs becomes a set of its characters: "cyber" would hold
        # the compartments c, y, b, e and r, and the case below would be allowed.
        pytest.param(
            '[principals.p]\ncompartments = "cyber"\n[models.m]\ncompartments = ["c"]\n',
            id="compartments-as-a-string",
        ),
        pytest.param('[principals.p]\nkind = "robot"\n[models.m]\n', id="unknown-kind"),
        pytest.param("principals = 3\n[models.m]\n", id="principals-not-a-table"),
    ],
)
def test_an_invalid_world_is_refused_as_bad_input(tmp_path: Path, world: str) -> None:
    """Every mistake in the file is a BadRequest (exit 2 from the CLI), never a silently
    different world nor a crash."""
    with pytest.raises(BadRequest):
        run_policy_tests(write_tests(tmp_path, case("p", "m", "deny"), world=world))


# ── the CLI ────────────────────────────────────────────────────────────────────────────────
def test_cli_policy_test_passes_with_exit_0(tmp_path: Path) -> None:
    path = write_tests(tmp_path, PASSING_CASES)
    done = garrison("policy", "test", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 passed, 0 failed" in done.stdout
    done = garrison("policy", "test", "--json", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 8
    assert {row["result"] for row in rows} == {"pass"}
    assert rows[2]["policies"] == ["no-weekends"]


def test_cli_policy_test_fails_with_exit_1(tmp_path: Path) -> None:
    cases = (
        case("alice", "cyber-model", "allow")
        + case("carol", "cyber-model", "allow")
        + case("carol", "cyber-model", "deny", 'reasons = ["clearance.level"]')
    )
    path = write_tests(tmp_path, cases)
    done = garrison("policy", "test", "--json", str(path), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    assert [row["result"] for row in rows] == [
        "pass",
        "FAIL",
        "FAIL expected reasons ['clearance.level']",
    ]
    done = garrison("policy", "test", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert "1 passed, 2 failed" in done.stdout


def test_cli_policy_test_refuses_invalid_input_with_exit_2(tmp_path: Path) -> None:
    path = write_tests(tmp_path, case("mallory", "assistant", "allow"))
    done = garrison("policy", "test", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "mallory" in done.stderr
    assert "Traceback" not in done.stderr
    missing = garrison("policy", "test", str(tmp_path / "nowhere.toml"), cwd=tmp_path)
    assert missing.returncode == 2


def test_cli_policy_test_refuses_a_bad_value_with_exit_2_not_1(tmp_path: Path) -> None:
    # Exit 1 means "a case failed"; a file the tool cannot read is invalid input (exit 2).
    world = '[principals.p]\nkind = "robot"\n[models.m]\n'
    path = write_tests(tmp_path, case("p", "m", "deny"), world=world)
    done = garrison("policy", "test", str(path), cwd=tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode == 2


def test_cli_policy_check(tmp_path: Path) -> None:
    policies = write_policies(tmp_path)
    done = garrison("policy", "check", str(policies), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"OK: {policies} is valid against the Garrison schema" in done.stdout
    (policies / "30-bad.cedar").write_text(
        "forbid (principal, action, resource) when { context.on_call };"
    )
    done = garrison("policy", "check", str(policies), cwd=tmp_path)
    assert done.returncode == 2
    assert "policy set refused" in done.stderr
    assert "on_call" in done.stderr
    syntax = tmp_path / "syntax.cedar"
    syntax.write_text("permit (principal action, resource);")
    done = garrison("policy", "check", str(syntax), cwd=tmp_path)
    assert done.returncode == 2
    assert "unexpected token" in done.stderr
