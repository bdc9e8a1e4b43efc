"""The directory commands new with the admin API, end to end: ``garrison`` subprocesses
against a real gateway (``served``), with model calls through it where a change must be
enforced at once.

Set-up that is not under test is written in-process (each subprocess costs half a second).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi, VendorStatus
from tests.cli.conftest import UPSTREAM_KEY, Served, Upstream, garrison

pytestmark = pytest.mark.e2e

DAY = 86400.0


def chat(served: Served, key: str, model: str = "assistant") -> int:
    """One chat completion through the gateway; returns the HTTP status."""
    resp = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    return resp.status_code


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def denied_for(served: Served, token: str) -> dict[str, Any]:
    """The ``request.denied`` record of a call made with ``token``."""
    return served.wait_for_event("request.denied", lambda e: e["credential_id"] == key_id(token))


def add_vendor(served: Served, name: str = "acme") -> str:
    """An active vendor (ceiling internal, no compartments), written in-process."""
    now = time.time()
    served.directory.create_vendor(
        name,
        sponsor="admin",
        contract_start=now - DAY,
        contract_end=now + 30 * DAY,
        networks=["127.0.0.0/8"],
        seat_limit=3,
        ceiling_level=Level.INTERNAL,
        now=now,
    )
    served.directory.set_vendor_status(name, VendorStatus.ACTIVE, now=now)
    return name


def principal_row(served: Served, name: str) -> tuple[Any, ...]:
    (row,) = served.query(
        "SELECT clearance, compartments, roles, status FROM principals WHERE name = ?", name
    )
    return tuple(row)


# ── whoami ─────────────────────────────────────────────────────────────────────────────────
def test_whoami_names_the_first_admin_in_text_and_json(served: Served) -> None:
    text = served.ok("whoami")
    ((admin_id,),) = served.query("SELECT id FROM principals WHERE name = 'admin'")
    first, second = text.strip().splitlines()
    assert first == f"admin ({admin_id}) roles: security-admin"
    assert second.startswith(f"key {key_id(served.admin_key)} provenance enrolled; invited by cli:")
    me = served.as_json("whoami")
    assert me == {
        "id": admin_id,
        "name": "admin",
        "org_id": me["org_id"],
        "roles": ["security-admin"],
        "credential_id": key_id(served.admin_key),  # the key of admin.key
        "address": "127.0.0.1",
        "vendor_scope": [],
        "credential_provenance": "enrolled",
        "credential_created_by": admin_id,
        "invited_by": me["invited_by"],  # garrison init, as the local user
        "invited_by_name": me["invited_by"],
    }
    assert me["org_id"].startswith("org_")
    for output in (text, str(me)):
        assert secret_of(served.admin_key) not in output


def test_whoami_of_a_vendor_manager_names_the_vendor_scope(served: Served) -> None:
    add_vendor(served, "acme")
    token = served.make_principal("vera", org="acme", roles=("vendor-manager",))
    out = served.ok("whoami", env={"GARRISON_ADMIN_KEY": token})
    assert out.startswith("vera (prn_") and "roles: vendor-manager" in out
    assert "vendor scope: org_" in out


# ── user show ──────────────────────────────────────────────────────────────────────────────
def test_user_show_gives_keys_and_last_use_after_a_real_call_never_the_secret(
    served: Served, upstream: Upstream
) -> None:
    token = served.make_principal("carol")
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key=token, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hello"}]
        )
    assert reply.choices[0].message.content
    allowed = served.wait_for_event(
        "request.allowed", lambda e: e["credential_id"] == key_id(token)
    )

    report = served.as_json("user", "show", "carol")
    assert (report["name"], report["kind"], report["org"], report["status"]) == (
        "carol",
        "human",
        "internal",
        "active",
    )
    assert (report["clearance"], report["compartments"], report["roles"]) == ("internal", [], [])
    (key,) = report["keys"]
    assert (key["id"], key["state"], key["sources"]) == (key_id(token), "active", ["127.0.0.1"])
    assert key["last_used"] == allowed["at"] == report["last_used"]

    text = served.ok("user", "show", "carol")
    first, *rest = text.splitlines()
    assert first.startswith(f"carol ({report['id']}) human in internal — active")
    assert "clearance internal" in first and "roles none" in first
    (row,) = [line for line in rest if key_id(token) in line]
    assert "active" in row and "127.0.0.1" in row
    for output in (text, str(report)):
        assert secret_of(token) not in output


def test_user_show_of_an_unknown_principal_is_one_clean_line(served: Served) -> None:
    assert served.refused("user", "show", "nobody") == "error: no principal 'nobody'"


# ── user update ────────────────────────────────────────────────────────────────────────────
def test_user_update_changes_clearance_compartments_and_roles(served: Served) -> None:
    served.make_principal("carol", key=False)
    changed = served.as_json(
        "user", "update", "carol",
        "--clearance", "restricted",
        "--compartment", "nuclear",
        "--compartment", "cyber",
        "--role", "auditor",
    )  # fmt: skip
    # Raising access is a proposal: a second security-admin applies it.
    change_id = changed["pending"]["id"]
    (carol,) = [p for p in served.gateway.state.snapshot.principals.values() if p.name == "carol"]
    assert carol.clearance is Level.INTERNAL
    second = served.make_principal("admin-2", roles=("security-admin",))
    approved = served.as_json("change", "approve", change_id, env={"GARRISON_ADMIN_KEY": second})
    changed = {"changes": approved["result"]}
    assert changed == {
        "changes": {
            "clearance": ["internal", "restricted"],
            "compartments": [[], ["cyber", "nuclear"]],
            "roles": [[], ["auditor"]],
        }
    }
    (carol,) = [p for p in served.gateway.state.snapshot.principals.values() if p.name == "carol"]
    assert carol.clearance is Level.RESTRICTED  # loaded before the command returned
    assert carol.compartments == frozenset({"cyber", "nuclear"})
    assert carol.roles == frozenset({"auditor"})
    (event,) = served.events("principal.updated")
    assert event["data"]["changes"] == changed["changes"]
    assert event["data"]["origin"]["admin"] == "admin-2"
    assert event["data"]["origin"]["change_id"] == change_id

    out = served.ok("user", "update", "carol", "--no-compartments", "--no-roles")
    assert out.splitlines() == [
        "carol: compartments ['cyber', 'nuclear'] → []",
        "carol: roles ['auditor'] → []",
    ]
    assert principal_row(served, "carol") == (int(Level.RESTRICTED), "[]", "[]", "active")
    assert served.ok("user", "update", "carol", "--clearance", "restricted") == (
        "carol: nothing changed\n"
    )


def test_user_update_of_clearance_is_enforced_at_once(served: Served, upstream: Upstream) -> None:
    served.directory.create_model(
        "restricted-model",
        upstream_url=upstream.url,
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.RESTRICTED,
        now=time.time(),
    )
    token = served.make_principal("carol")
    # Beyond one's clearance a model is as unknown as a missing one (404, no oracle).
    assert chat(served, token, "restricted-model") == 404
    out = served.ok("user", "update", "carol", "--clearance", "restricted")
    change_id = out.split(":")[0]
    assert chat(served, token, "restricted-model") == 404  # proposed, not applied
    second = served.make_principal("admin-2", roles=("security-admin",))
    served.ok("change", "approve", change_id, env={"GARRISON_ADMIN_KEY": second})
    assert chat(served, token, "restricted-model") == 200


def test_user_update_refuses_a_change_to_ones_own_access(served: Served) -> None:
    before = principal_row(served, "admin")
    err = served.refused("user", "update", "admin", "--clearance", "public")
    assert err == "error: rule no-self-change: an admin cannot change their own access"
    assert principal_row(served, "admin") == before
    denied = served.wait_for_event("admin.denied")
    assert denied["data"]["reasons"] == ["admin.self_change"]
    assert denied["data"]["path"] == "/admin/v1/principals/admin"


def test_user_update_refuses_clearance_above_the_vendor_ceiling(served: Served) -> None:
    add_vendor(served, "acme")
    served.make_principal("vic", org="acme", key=False)
    before = principal_row(served, "vic")
    err = served.refused("user", "update", "vic", "--clearance", "restricted")
    assert err.startswith("error: rule vendor-ceiling: clearance restricted")
    assert "exceeds the vendor's ceiling (internal, [])" in err
    err = served.refused("user", "update", "vic", "--compartment", "cyber")
    assert "rule vendor-ceiling" in err and "['cyber']" in err
    assert principal_row(served, "vic") == before


def test_user_update_with_nothing_to_change_is_a_usage_error(served: Served) -> None:
    assert "nothing to change" in served.usage_error("user", "update", "admin")


# ── user disable / enable ──────────────────────────────────────────────────────────────────
def test_user_disable_stops_every_key_at_once_and_enable_restores_it(
    served: Served, upstream: Upstream
) -> None:
    token = served.make_principal("carol")
    assert chat(served, token) == 200
    assert served.ok("user", "disable", "carol") == "carol: status active → disabled\n"
    assert chat(served, token) == 401
    assert denied_for(served, token)["data"]["reasons"] == ["principal.inactive"]
    assert served.ok("user", "enable", "carol") == "carol: status disabled → active\n"
    assert chat(served, token) == 200


def test_user_disable_refuses_the_last_security_admin(served: Served) -> None:
    err = served.refused("user", "disable", "admin")
    assert err.startswith("error: rule last-security-admin:")
    assert principal_row(served, "admin")[3] == "active"


# ── service accounts ───────────────────────────────────────────────────────────────────────
def test_service_add_creates_a_service_account_that_cannot_hold_roles(served: Served) -> None:
    out = served.ok("service", "add", "build-bot", "--org", "internal", "--clearance", "public")
    assert out.strip().startswith("prn_")
    (row,) = served.as_json("user", "list", "--org", "internal", "--kind", "service")
    assert (row["id"], row["name"], row["kind"], row["clearance"], row["roles"]) == (
        out.strip(),
        "build-bot",
        "service",
        "public",
        [],
    )

    err = served.usage_error("service", "add", "ci-bot", "--org", "internal", "--role", "auditor")
    assert "No such option '--role'" in err
    err = served.refused("user", "update", "build-bot", "--role", "auditor")
    assert err == "error: rule service-roles: a service account cannot hold admin roles"
    assert served.query("SELECT name, roles FROM principals WHERE kind = 'service'") == [
        ("build-bot", "[]")
    ]


# ── key rotate ─────────────────────────────────────────────────────────────────────────────
def test_key_rotate_prints_the_new_key_once_and_refuses_the_old_at_once(
    served: Served, upstream: Upstream
) -> None:
    old = served.make_principal("carol", kind=PrincipalKind.SERVICE)  # admins rotate these
    assert chat(served, old) == 200
    out = served.ok("key", "rotate", key_id(old), "--reason", "leaked")
    lines = out.splitlines()
    assert lines[0].startswith("key id:  ")
    new_id = lines[0].split()[-1]
    assert lines[-2] == "key (shown once):"
    new = lines[-1].strip()
    assert key_id(new) == new_id != key_id(old)
    assert out.count(secret_of(new)) == 1

    assert chat(served, old) == 401  # no grace: revoked before the command returned
    assert denied_for(served, old)["data"]["reasons"] == ["credential.revoked"]
    assert chat(served, new) == 200

    keys = served.as_json("key", "list", "--principal", "carol")
    assert {k["id"]: k["state"] for k in keys} == {key_id(old): "revoked", new_id: "active"}
    listed = str(keys)
    assert secret_of(new) not in listed and secret_of(old) not in listed
    (rotated,) = served.events("credential.rotated")
    assert rotated["credential_id"] == key_id(old)
    assert rotated["data"]["successor"] == new_id
    assert (rotated["data"]["reason"], rotated["data"]["grace_s"]) == ("leaked", 0.0)


def test_key_rotate_with_grace_keeps_the_old_key_working(
    served: Served, upstream: Upstream
) -> None:
    old = served.make_principal("carol", kind=PrincipalKind.SERVICE)
    issued = served.as_json("key", "rotate", key_id(old), "--grace", "1h")
    assert issued["rotated_from"] == key_id(old) and issued["grace_s"] == 3600
    assert issued["key"].startswith(f"gk_{issued['id']}_")
    assert chat(served, old) == 200
    assert chat(served, issued["key"]) == 200
    ((expires_at, revoked_at),) = served.query(
        "SELECT expires_at, revoked_at FROM credentials WHERE id = ?", key_id(old)
    )
    assert revoked_at is None
    assert abs(expires_at - (time.time() + 3600)) < 60


def test_key_rotate_of_an_unknown_key_is_one_clean_line(served: Served) -> None:
    assert served.refused("key", "rotate", "nope") == "error: key 'nope' does not exist"


# ── model update ───────────────────────────────────────────────────────────────────────────
def test_model_update_of_the_level_is_enforced_at_once(served: Served, upstream: Upstream) -> None:
    token = served.make_principal("carol")  # clearance internal
    assert chat(served, token) == 200
    changed = served.as_json("model", "update", "assistant", "--level", "restricted")
    assert changed == {"changes": {"level": ["internal", "restricted"]}}
    assert chat(served, token) == 404  # beyond clearance: as if unknown
    assert denied_for(served, token)["data"]["reasons"] == ["clearance.level"]
    (model,) = served.as_json("model", "list")
    assert model["level"] == "restricted"


def test_model_update_reads_the_upstream_key_from_the_environment_and_never_shows_it(
    served: Served, upstream: Upstream
) -> None:
    token = served.make_principal("carol")
    new_secret = "sk-rotated-upstream-SECRET-9876543210"
    out = served.run(
        "model",
        "update",
        "assistant",
        "--upstream-key-env",
        "NEW_UPSTREAM_KEY",
        env={"NEW_UPSTREAM_KEY": new_secret},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "assistant: upstream_key replaced\n"
    assert chat(served, token) == 200
    assert upstream.mock.seen[-1].headers["authorization"] == f"Bearer {new_secret}"
    (event,) = served.events("model.updated")
    assert event["data"]["changes"] == {"upstream_key": "replaced"}
    served.wait_for_event("request.completed")
    for where in (out.stdout, out.stderr, served.raw_audit().decode()):
        assert new_secret not in where and UPSTREAM_KEY not in where
    ((sealed,),) = served.query("SELECT upstream_key_sealed FROM models")
    assert new_secret.encode() not in sealed  # sealed at rest

    err = served.usage_error("model", "update", "assistant", "--upstream-key-env", "UNSET_VAR_X")
    assert "environment variable UNSET_VAR_X is empty or unset" in err


# ── whose key, which address ───────────────────────────────────────────────────────────────
def test_admin_key_from_the_environment_wins_and_an_auditor_cannot_write(served: Served) -> None:
    auditor = served.make_principal("audrey", roles=("auditor",))
    env = {"GARRISON_ADMIN_KEY": auditor}
    me = served.as_json("whoami", env=env)
    assert (me["name"], me["roles"], me["credential_id"]) == (
        "audrey",
        ["auditor"],
        key_id(auditor),
    )
    # Reads are allowed ...
    assert {r["name"] for r in served.as_json("user", "list", env=env)} == {"admin", "audrey"}

    # ... writes are not, whether the route refuses them or the handler does.
    before = served.query("SELECT count(*) FROM change_feed")
    err = served.refused("org", "add", "research", env=env)
    assert err == "error: your roles do not allow create-org"
    err = served.refused("user", "update", "admin", "--clearance", "public", env=env)
    assert err == "error: your roles do not allow set-principal-access"
    assert served.query("SELECT count(*) FROM change_feed") == before
    denied = served.wait_for_event("admin.denied")
    assert denied["actor"] == me["id"]
    assert denied["data"]["reasons"] == ["admin.role_lacks_action"]


def test_an_unknown_admin_key_is_refused_in_one_line(served: Served) -> None:
    err = served.refused("whoami", env={"GARRISON_ADMIN_KEY": "gk_0123456789abcdef_nope"})
    assert err == "error: Invalid or missing API key."
    denied = served.wait_for_event("admin.denied")
    assert denied["actor"] is None and denied["data"]["status"] == 401


def test_an_unreachable_admin_url_is_one_clean_line(served: Served) -> None:
    err = served.refused("whoami", env={"GARRISON_ADMIN_URL": "http://127.0.0.1:9"})
    assert "cannot reach the admin API at http://127.0.0.1:9" in err
    assert "is `garrison serve` running there?" in err


def test_a_credential_file_readable_by_others_is_refused(served: Served) -> None:
    credential = served.data_dir / "admin.key"
    credential.chmod(0o644)
    err = served.refused("whoami")
    assert err == f"error: admin credential file {credential} is readable by others; chmod 600 it"
    # A key given in the environment does not need the file.
    out = served.ok("whoami", env={"GARRISON_ADMIN_KEY": served.admin_key})
    assert out.startswith("admin (prn_")


def test_a_missing_config_and_no_environment_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "nowhere" / "garrison.toml"
    out = garrison("whoami", "--config", str(config))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: config file {config} not found and GARRISON_ADMIN_URL is not set"
    ]


def test_no_admin_key_anywhere_is_a_clean_error_naming_the_config_setting(
    tmp_path: Path,
) -> None:
    config = tmp_path / "nowhere" / "garrison.toml"
    out = garrison("whoami", "--config", str(config), url="http://127.0.0.1:9")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: no admin credential: set GARRISON_ADMIN_KEY or [admin] credential_file"
    ]


# ── the error line itself ──────────────────────────────────────────────────────────────────
def test_an_error_stays_on_one_line_when_stderr_is_not_a_terminal(served: Served) -> None:
    """Scripts read the error from a pipe, where no terminal width applies (no COLUMNS)."""
    out = served.run("whoami", env={"GARRISON_ADMIN_URL": "http://127.0.0.1:9", "COLUMNS": None})
    assert out.returncode == 6 and "Traceback" not in out.stderr  # network failure
    assert out.stderr.strip().splitlines() == [
        "error: cannot reach the admin API at http://127.0.0.1:9 (ConnectError); "
        "is `garrison serve` running there?"
    ]


def test_an_error_naming_brackets_is_printed_verbatim(served: Served) -> None:
    """The server's message is text, not markup: what the admin typed comes back as typed."""
    err = served.refused("user", "add", "x", "--org", "ops[/]")
    assert err == "error: org 'ops[/]' does not exist"
    err = served.refused("user", "add", "x", "--org", "ops[bold]")
    assert err == "error: org 'ops[bold]' does not exist"


# ── the rest of --json ─────────────────────────────────────────────────────────────────────
def test_list_commands_give_json(served: Served, upstream: Upstream) -> None:
    served.ok("org", "add", "research")
    orgs = served.as_json("org", "list")
    assert [(o["name"], o["kind"]) for o in orgs] == [
        ("internal", "internal"),
        ("research", "internal"),
    ]
    models = served.as_json("model", "list")
    assert [(m["name"], m["level"], m["upstream_key"]) for m in models] == [
        ("assistant", "internal", "sealed")
    ]
    assert UPSTREAM_KEY not in str(models)
    (admin_key,) = served.as_json("key", "list", "--principal", "admin")
    assert admin_key["id"] == key_id(served.admin_key)
    assert admin_key["principal"] == "admin" and admin_key["state"] == "active"
