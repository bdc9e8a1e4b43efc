"""``garrison access|approvals|changes|change|policy`` as subprocesses, driving the admin API
of a gateway running for the test's data directory; each command runs as the principal whose
key ``GARRISON_ADMIN_KEY`` holds (the first admin's key file otherwise).

Set-up that is not under test (people, the critical model) is written in-process.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import openai
import pytest

from garrison.domain import AuthStyle, Level, UpstreamApi
from tests.cli.conftest import Served, Upstream

pytestmark = pytest.mark.e2e

FORBID_CAROL = """@id("no-carol-on-assistant")
forbid (principal, action == Garrison::Action::"invoke", resource)
when { principal.name == "carol" && resource.name == "assistant" };
"""


def as_(key: str) -> dict[str, str | None]:
    return {"GARRISON_ADMIN_KEY": key}


def add_oracle(served: Served, upstream: Upstream) -> None:
    """A critical model forwarding to the mock upstream (in-process set-up)."""
    served.directory.create_model(
        "oracle",
        upstream_url=upstream.url,
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.CRITICAL,
        now=time.time(),
    )
    served.sync()


def chat_status(served: Served, key: str, model: str) -> int:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0) as client:
        try:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}]
            )
        except openai.APIStatusError as exc:
            return exc.status_code
    return 200


def test_request_approve_by_two_list_and_revoke(served: Served, upstream: Upstream) -> None:
    add_oracle(served, upstream)
    ivan = served.make_principal("ivan", clearance=Level.CRITICAL)
    appr_1 = served.make_principal("appr-1", roles=("approver",))
    appr_2 = served.make_principal("appr-2", roles=("approver",))
    carol = served.make_principal("carol")
    assert chat_status(served, ivan, "oracle") == 404

    out = served.ok(
        "access", "request", "--model", "oracle", "--for", "2h", "--reason", "INC-7 triage",
        env=as_(ivan),
    )  # fmt: skip
    found = re.fullmatch(r"(acr_[0-9a-f]{16}): pending until \S.*\n", out)
    assert found, out
    rid = found.group(1)

    waiting = served.as_json("approvals", env=as_(appr_1))
    assert [r["id"] for r in waiting["access_requests"]] == [rid]
    assert waiting["changes"] == []
    (row,) = waiting["access_requests"]
    assert (row["principal"], row["model"], row["duration_s"]) == ("ivan", "oracle", 7200)

    # neither someone without roles nor the security-admin (no approver role) may approve
    assert served.refused("access", "approve", rid, env=as_(carol)) == (
        "error: you hold no admin role"
    )
    assert served.refused("access", "approve", rid) == (
        "error: your roles do not allow approve-access"
    )

    assert (
        served.ok("access", "approve", rid, env=as_(appr_1)) == f"{rid}: pending (1 approval(s))\n"
    )
    assert chat_status(served, ivan, "oracle") == 404
    out = served.ok("access", "approve", rid, env=as_(appr_2))
    found = re.fullmatch(rf"{rid}: approved; grant (gnt_[0-9a-f]{{16}}) is active\n", out)
    assert found, out
    grant_id = found.group(1)
    assert chat_status(served, ivan, "oracle") == 200

    (mine,) = served.as_json("access", "list", "--mine", env=as_(ivan))
    assert (mine["id"], mine["status"], mine["approved by"]) == (rid, "approved", 2)
    (grant,) = served.as_json("access", "grants", env=as_(ivan))
    assert (grant["id"], grant["state"], grant["model"]) == (grant_id, "active", "oracle")
    assert grant["request_id"] == rid

    assert served.ok("access", "revoke", grant_id, "--reason", "done", env=as_(ivan)) == (
        f"{grant_id}: revoked\n"
    )
    assert chat_status(served, ivan, "oracle") == 404
    names = [e["name"] for e in served.events() if e["name"].startswith(("access.", "grant."))]
    assert names == [
        "access.requested",
        "access.approved",
        "access.approved",
        "access.granted",
        "grant.revoked",
    ]


def test_change_approve_of_a_clearance_raise(served: Served) -> None:
    served.make_principal("carol")
    sec_2 = served.make_principal("sec-2", roles=("security-admin",))
    proposed = served.as_json("user", "update", "carol", "--clearance", "restricted")
    change_id = proposed["pending"]["id"]
    assert served.query("SELECT clearance FROM principals WHERE name = 'carol'") == [
        (int(Level.INTERNAL),)
    ]
    (listed,) = served.as_json("changes", env=as_(sec_2))
    assert (listed["id"], listed["kind"], listed["status"]) == (
        change_id,
        "principal-access",
        "pending",
    )
    # the proposer is not the second admin
    err = served.refused("change", "approve", change_id)
    assert "rule two-person" in err
    out = served.ok("change", "approve", change_id, env=as_(sec_2))
    assert out.startswith(f"{change_id}: approved and applied ")
    assert "'clearance': ['internal', 'restricted']" in out
    assert served.query("SELECT clearance FROM principals WHERE name = 'carol'") == [
        (int(Level.RESTRICTED),)
    ]
    (done,) = served.as_json("changes", "--all", env=as_(sec_2))
    assert done["status"] == "approved"


@pytest.mark.parametrize(
    "command",
    [
        ("user", "update", "carol", "--clearance", "restricted"),
        ("model", "update", "assistant", "--level", "public"),
    ],
    ids=["user-update-raise", "model-update-lower"],
)
def test_an_update_that_waits_reports_the_pending_change(
    served: Served, upstream: Upstream, command: tuple[str, ...]
) -> None:
    """A change answered 202 (pending a second admin) is reported as pending, not a crash."""
    served.make_principal("carol")
    out = served.run(*command)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "chg_" in out.stdout


def test_policy_push_approve_and_explain(
    served: Served, upstream: Upstream, tmp_path: Path
) -> None:
    carol = served.make_principal("carol")
    sec_2 = served.make_principal("sec-2", roles=("security-admin",))
    policy = tmp_path / "org.cedar"
    policy.write_text(FORBID_CAROL)
    out = served.ok("policy", "push", str(policy))
    found = re.fullmatch(r"(chg_[0-9a-f]{16}): validated; waiting for a second admin .*\n", out)
    assert found, out
    assert chat_status(served, carol, "assistant") == 200  # not in force yet

    served.ok("change", "approve", found.group(1), env=as_(sec_2))
    assert chat_status(served, carol, "assistant") == 404
    denied = served.wait_for_event(
        "request.denied", lambda e: e["data"].get("policies") == ["no-carol-on-assistant"]
    )
    assert denied["data"]["reasons"] == ["policy.forbid"]
    shown = served.as_json("policy", "show")
    assert (shown["version"], shown["text"]) == (1, FORBID_CAROL)

    lines = served.ok("policy", "explain", "--principal", "carol", "--model", "assistant")
    assert lines.splitlines()[:3] == [
        "DENY: carol → assistant",
        "reasons:  policy.forbid",
        "policies: no-carol-on-assistant",
    ]
    assert lines.splitlines()[3].startswith("context:  ")
    allowed = served.as_json("policy", "explain", "--principal", "admin", "--model", "assistant")
    assert (allowed["decision"], allowed["reasons"], allowed["policies"]) == (
        "allow",
        ["allowed"],
        ["permit-dominance"],
    )

    bad = tmp_path / "bad.cedar"
    bad.write_text("forbid (principal, action, resource")
    err = served.refused("policy", "push", str(bad))
    assert err.startswith("error: policy set refused: ")
    assert served.query("SELECT count(*) FROM pending_changes") == [(1,)]
