"""Accountable identities (issue 12), end to end through the CLI and HTTP only: nothing here
writes the database. ``garrison init`` seats two admins, each enrolls with their code; people
are invited and enroll from their own addresses (127.0.x.1 plays other machines); a JIT
request is approved by two people; a lockdown is lifted by two. Every route by which one
admin could act as someone else is refused, and the audit log names the true actor."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from garrison.config import load_settings
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway
from tests.cli.conftest import BackgroundLoop, Cli, garrison

pytestmark = pytest.mark.e2e

CODE_RE = re.compile(r"\bge_[A-Za-z0-9_-]{43}\b")


@dataclass
class Site:
    cli: Cli
    url: str
    data: Path
    upstream: str
    keys: dict[str, str]

    def run(self, who: str | None, *args: str, source: str | None = None) -> Any:
        env: dict[str, str | None] = {"GARRISON_SOURCE_ADDRESS": source}
        if who is not None:
            env["GARRISON_ADMIN_KEY"] = self.keys[who]
        return self.cli.run(*args, env=env)

    def ok(self, who: str | None, *args: str, source: str | None = None) -> str:
        out = self.run(who, *args, source=source)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return str(out.stdout)

    def js(self, who: str | None, *args: str, source: str | None = None) -> Any:
        return json.loads(self.ok(who, *args, "--json", source=source))

    def refused(self, who: str | None, *args: str, source: str | None = None, code: int = 3) -> str:
        """The command fails with exit ``code`` (docs/cli.md "Exit codes": 3 = refused)."""
        out = self.run(who, *args, source=source)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        return str(out.stderr)

    def enroll(self, name: str, code: str, source: str) -> None:
        issued = self.js(None, "enroll", code, source=source)
        assert issued["principal"] == name and issued["provenance"] == "enrolled"
        self.keys[name] = issued["key"]

    def events(self, name: str) -> list[dict[str, Any]]:
        import sqlite3

        conn = sqlite3.connect(self.data / "garrison.db")
        try:
            rows = conn.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [e for e in (orjson.loads(r[0]) for r in rows) if e["name"] == name]

    def wait_event(self, name: str, where: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [e for e in self.events(name) if where(e)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {name} event")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    data = tmp_path / "data"
    out = garrison("init", "--data-dir", str(data), "--admin", "ana", "--admin", "ben")
    assert out.returncode == 0, out.stderr
    assert "gk_" not in out.stdout + out.stderr  # no secret printed, only codes
    assert "WARNING" not in out.stderr
    codes = dict(re.findall(r"^\s+(\w+): (ge_\S+)$", out.stdout, re.M))
    assert set(codes) == {"ana", "ben"}
    config = data / "garrison.toml"
    settings = dataclasses.replace(load_settings(config, env={}), port=0)
    runner = BackgroundLoop()
    mock = MockUpstream(MockConfig())

    async def start() -> tuple[Gateway, int]:
        gw = Gateway(settings)
        await gw.start()
        return gw, await mock.start("127.0.0.1", 0)

    gateway, up_port = runner.call(start())
    try:
        url = f"http://127.0.0.1:{gateway.port}"
        s = Site(Cli(config, url), url, data, f"http://127.0.0.1:{up_port}/v1", {})
        s.enroll("ana", codes["ana"], "127.0.2.1")
        s.enroll("ben", codes["ben"], "127.0.3.1")
        yield s
    finally:
        runner.call(gateway.stop())
        runner.call(mock.stop())
        runner.close()


def invite_with_second_admin(s: Site, name: str, *add: str, source: str) -> None:
    """ana adds someone who needs two admins, ben approves, ana invites, they enroll."""
    out = s.ok("ana", "user", "add", name, "--org", "internal", *add)
    change = re.search(r"(chg_[0-9a-f]{16}): proposed", out)
    assert change is not None, out
    assert CODE_RE.search(out) is None  # no code before the second admin agrees
    s.ok("ben", "change", "approve", change.group(1))
    code = CODE_RE.search(s.ok("ana", "user", "invite", name))
    assert code is not None
    s.enroll(name, code.group(0), source)


def vendor_with_manager(s: Site, *, ceiling: str) -> None:
    """Vendor ``acme`` (active, with ``ceiling``) and its vendor-manager ``vic``, added by
    ana, approved by ben and enrolled from 127.0.7.1."""
    s.ok(
        "ana",
        "vendor",
        "add",
        "acme",
        "--sponsor",
        "ana",
        "--contract-end",
        "2099-01-01",
        "--network",
        "127.0.0.0/8",
        "--seats",
        "5",
        "--ceiling",
        ceiling,
    )
    s.ok("ana", "vendor", "activate", "acme")
    out = s.ok("ana", "user", "add", "vic", "--org", "acme", "--role", "vendor-manager")
    change = re.search(r"(chg_[0-9a-f]{16})", out)
    assert change is not None
    s.ok("ben", "change", "approve", change.group(1))
    code = CODE_RE.search(s.ok("ana", "user", "invite", "vic"))
    assert code is not None
    s.enroll("vic", code.group(0), "127.0.7.1")


def test_two_admins_invite_enroll_approve_and_lift(site: Site) -> None:
    s = site
    me = s.js("ana", "whoami")
    assert me["credential_provenance"] == "enrolled"
    assert me["invited_by_name"].startswith("cli:")  # garrison init on the host
    who = s.ok("ana", "whoami")
    assert "provenance enrolled" in who and "invited by cli:" in who

    # A contractor cleared for critical, and two approvers: each a two-person invitation.
    invite_with_second_admin(s, "cody", "--clearance", "critical", source="127.0.4.1")
    invite_with_second_admin(s, "dee", "--role", "approver", source="127.0.5.1")
    invite_with_second_admin(s, "eve", "--role", "approver", source="127.0.6.1")
    assert s.js("dee", "whoami")["invited_by_name"] == "ana"

    # A critical model is a proposal too: ben applies it.
    out = s.ok(
        "ana",
        "model",
        "add",
        "oracle",
        "--upstream-url",
        s.upstream,
        "--upstream-model",
        "mock-small",
        "--level",
        "critical",
    )
    change = re.search(r"(chg_[0-9a-f]{16}): proposed", out)
    assert change is not None, out
    s.ok("ben", "change", "approve", change.group(1))
    request = s.js(
        "cody", "access", "request", "--model", "oracle", "--for", "1h", "--reason", "incident 42"
    )
    s.ok("dee", "access", "approve", request["id"])
    s.ok("eve", "access", "approve", request["id"])
    granted = s.wait_event("access.granted", lambda e: e["data"].get("request_id") == request["id"])
    assert granted["actor"] == s.js("eve", "whoami")["id"]
    approvals = s.events("access.approved")
    assert {e["actor"] for e in approvals} == {s.js(n, "whoami")["id"] for n in ("dee", "eve")}
    # Each approval names the approver's key and its provenance.
    assert all(e["data"]["origin"]["credential_provenance"] == "enrolled" for e in approvals)
    r = httpx.post(
        f"{s.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {s.keys['cody']}"},
        json={"model": "oracle", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text

    # A lockdown, lifted by two people.
    lock = s.js("ana", "lock", "all", "--reason", "drill")
    assert "requested" in s.ok("ana", "unlock", lock["id"], "--reason", "over")
    assert "lifted" in s.ok("ben", "unlock", lock["id"], "--reason", "over")
    lifted = s.wait_event("lock.lifted", lambda e: e["data"]["lock_id"] == lock["id"])
    assert lifted["actor"] == s.js("ben", "whoami")["id"]
    assert lifted["data"]["requested_by"] == s.js("ana", "whoami")["id"]
    assert lifted["data"]["origin"]["credential_provenance"] == "enrolled"


def test_every_impersonation_route_is_refused(site: Site) -> None:
    s = site
    ana_id = s.js("ana", "whoami")["id"]
    invite_with_second_admin(s, "dee", "--role", "approver", source="127.0.5.1")

    # 1. An admin asks for a key for a person: refused, named, audited as the admin.
    err = s.refused("ana", "key", "create", "dee")
    assert "is a person" in err and "invite" in err
    denied = s.wait_event(
        "admin.denied", lambda e: "identity.key_for_person" in e["data"]["reasons"]
    )
    assert denied["actor"] == ana_id

    # 2. A vendor-manager for a colleague: refused the same way.
    vendor_with_manager(s, ceiling="internal")
    colleague = s.ok("vic", "user", "add", "col", "--org", "acme")
    assert CODE_RE.search(colleague)  # vic invites (a code), never a key
    err = s.refused("vic", "key", "create", "col")
    assert "is a person" in err
    vic_id = s.js("vic", "whoami")["id"]
    s.wait_event(
        "admin.denied",
        lambda e: e["actor"] == vic_id and "identity.key_for_person" in e["data"]["reasons"],
    )

    # 3. A service account's key (admin-made) approves nothing: it holds no role, and an
    # approval is taken only from a person's own key.
    s.ok("ana", "service", "add", "bot", "--org", "internal")
    bot = s.js("ana", "key", "create", "bot")
    assert bot["provenance"] == "service"
    s.keys["bot"] = bot["key"]
    listed = {k["id"]: k for k in s.js("ana", "key", "list")}
    assert listed[bot["id"]]["provenance"] == "service"
    assert listed[bot["id"]]["created_by"] == ana_id
    pending = s.ok("ana", "user", "update", "dee", "--clearance", "restricted")
    change = re.search(r"(chg_[0-9a-f]{16})", pending)
    assert change is not None
    s.refused("bot", "change", "approve", change.group(1))

    # 4. An admin-made key (break glass on the host) approves nothing either.
    recovered = s.cli.run("recover-admin", "--principal", "ben")
    assert recovered.returncode == 0, recovered.stderr
    assert "BREAK GLASS" in recovered.stderr
    s.keys["ben-glass"] = (s.data / "admin.key").read_text().strip()
    err = s.refused("ben-glass", "change", "approve", change.group(1))
    assert "provenance is break-glass" in err
    glass = s.wait_event(
        "admin.denied", lambda e: "identity.approval_credential" in e["data"]["reasons"]
    )
    assert glass["actor"] == s.js("ben", "whoami")["id"]  # the true holder of that key
    alerts = s.js("ana", "alerts")
    assert any(a["rule_id"] == "break-glass" for a in alerts)
    # ... while ben's own key does.
    s.ok("ben", "change", "approve", change.group(1))

    # 5. The inviter redeeming their own code: with their key, or from their address.
    code = CODE_RE.search(s.ok("ana", "user", "add", "fay", "--org", "internal"))
    assert code is not None
    r = httpx.post(
        f"{s.url}/admin/v1/enroll",
        headers={"authorization": f"Bearer {s.keys['ana']}"},
        json={"code": code.group(0)},
    )
    assert r.status_code == 403 and "inviter" in r.text
    # The code is void now, for anyone.
    err = s.refused(None, "enroll", code.group(0), source="127.0.8.1")
    assert "not valid" in err
    code = CODE_RE.search(s.ok("ana", "user", "invite", "fay"))
    assert code is not None
    err = s.refused(None, "enroll", code.group(0))  # from 127.0.0.1, where ana works
    assert "used by the inviter" in err
    refusals = s.events("enrollment.refused")
    assert sum("identity.enroll_by_inviter" in e["data"]["reasons"] for e in refusals) == 2
    assert all(
        e["data"]["invited_by"] == ana_id
        for e in refusals
        if "identity.enroll_by_inviter" in e["data"]["reasons"]
    )
    assert any(a["rule_id"] == "enroll-by-inviter" for a in s.js("ana", "alerts"))

    # 6. An admin rotating a person's key never gets a secret; for an approver (a role) not
    # even a code: a second admin approves the new invitation first.
    dee_key = s.keys["dee"].split("_")[1]
    rotated = s.js("ana", "key", "rotate", dee_key)
    assert "key" not in rotated and "enrollment_code" not in rotated
    assert rotated["state"] == "revoked" and "user invite" in rotated["invite"]
    assert s.run("dee", "whoami").returncode == 3  # refused (401): revoked at once, no grace
    out = s.ok("ana", "user", "invite", "dee")
    change = re.search(r"(chg_[0-9a-f]{16})", out)
    assert change is not None and CODE_RE.search(out) is None, out
    s.ok("ben", "change", "approve", change.group(1))
    code = CODE_RE.search(s.ok("ana", "user", "invite", "dee"))
    assert code is not None
    s.enroll("dee", code.group(0), "127.0.5.1")
    assert s.js("dee", "whoami")["credential_provenance"] == "enrolled"
    # A person with nothing beyond internal gets the code from the rotation itself.
    code = CODE_RE.search(s.ok("ben", "user", "invite", "fay"))
    assert code is not None
    s.enroll("fay", code.group(0), "127.0.8.1")
    rotated = s.js("ana", "key", "rotate", s.keys["fay"].split("_")[1])
    assert CODE_RE.fullmatch(rotated["enrollment_code"])

    # 7. People make their own keys; the listing shows who made each and how.
    mine = s.js("dee", "key", "create", "--self", "--expires-in", "1d")
    assert mine["provenance"] == "self"
    listed = {k["id"]: k for k in s.js("ana", "key", "list", "--principal", "dee")}
    assert listed[mine["id"]]["created_by"] == listed[mine["id"]]["principal_id"]
    # ben's break-glass key is one someone else made for a person: `keys audit` lists it.
    audit = s.js("ana", "keys", "audit")
    assert [k["provenance"] for k in audit] == ["break-glass"]


def test_one_admin_cannot_rotate_another_admin_into_their_own_hands(site: Site) -> None:
    """ana rotates ben's key: ben's key is revoked, but ana gets no enrollment code for ben,
    so she cannot redeem it from an address she never used and approve her own change as
    ben (a code for anyone with a role, a compartment or a clearance above internal is
    issued only under a second admin's approval)."""
    s = site
    ben_key = s.keys["ben"].split("_")[1]
    out = s.run("ana", "key", "rotate", ben_key, "--json")
    assert CODE_RE.search(out.stdout + out.stderr) is None, out.stdout
    assert s.run("ben", "whoami").returncode == 3  # ben's key is revoked all the same
    # A vendor-wide rotation of the internal org gives ana no code for ben either.
    out = s.run("ana", "key", "rotate", "--vendor", "internal", "--reason", "breach", "--json")
    assert CODE_RE.search(out.stdout + out.stderr) is None, out.stdout
    assert not [e for e in s.events("enrollment.issued") if e["data"]["name"] == "ben"][1:]


def test_a_rotation_mints_no_service_key_above_the_issuers_reach(site: Site) -> None:
    """A vendor-manager cleared for internal may not create a key for their vendor's
    restricted service account (a second admin approves that); rotating the account's
    existing key, or the whole vendor's keys, must not hand them one either."""
    s = site
    vendor_with_manager(s, ceiling="restricted")
    out = s.ok("ana", "service", "add", "rbot", "--org", "acme", "--clearance", "restricted")
    change = re.search(r"(chg_[0-9a-f]{16})", out)
    assert change is not None
    s.ok("ben", "change", "approve", change.group(1))
    # vic creating a key for it is a proposal; ben approves; vic creates the one key.
    out = s.ok("vic", "key", "create", "rbot")
    change = re.search(r"(chg_[0-9a-f]{16})", out)
    assert change is not None and "gk_" not in out, out
    s.ok("ben", "change", "approve", change.group(1))
    made = s.js("vic", "key", "create", "rbot")
    key_id = made["id"]

    # The approval counted once: rotating it is a new proposal, not a key ...
    out = s.ok("vic", "key", "rotate", key_id, "--grace", "1h")
    change = re.search(r"(chg_[0-9a-f]{16})", out)
    assert "gk_" not in out and change is not None, out
    # ... which, approved, lets the proposer rotate it once.
    s.ok("ben", "change", "approve", change.group(1))
    rotated = s.js("vic", "key", "rotate", key_id, "--grace", "1h")
    assert rotated["provenance"] == "service" and rotated["rotated_from"] == key_id
    out = s.ok("vic", "key", "rotate", rotated["id"])
    assert "gk_" not in out and re.search(r"chg_[0-9a-f]{16}", out), out
    # A vendor rotation revokes the account's keys but hands vic no new one.
    out = s.ok("vic", "key", "rotate", "--vendor", "acme", "--reason", "drill", "--json")
    assert "gk_" not in out, out


def test_a_lock_on_a_key_covers_the_keys_made_with_it(site: Site) -> None:
    """A thief holding a person's leaked key mints a `--self` key with it before the leak is
    seen; locking the leaked key must cut that one too (like a key rotated from it)."""
    s = site
    code = CODE_RE.search(s.ok("ben", "user", "add", "fay", "--org", "internal"))
    assert code is not None
    s.enroll("fay", code.group(0), "127.0.8.1")
    leaked = s.keys["fay"].split("_")[1]
    minted = s.js("fay", "key", "create", "--self", "--expires-in", "1d")
    s.keys["minted"] = minted["key"]
    grandchild = s.js("minted", "key", "create", "--self", "--expires-in", "1d")
    s.keys["grandchild"] = grandchild["key"]

    def status(who: str) -> int:
        r = httpx.get(
            f"{s.url}/v1/models", headers={"authorization": f"Bearer {s.keys[who]}"}, timeout=10
        )
        return r.status_code

    assert status("grandchild") == 200
    s.ok("ana", "lock", "credential", leaked, "--reason", "leaked on a paste site")
    for who in ("fay", "minted", "grandchild"):
        deadline = time.monotonic() + 5
        while status(who) == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(who) in (401, 403), who


def test_a_locked_inviter_cannot_cash_a_code_they_issued_before_the_lock(site: Site) -> None:
    """ana, an insider, invites a placeholder person, keeps the code, and is locked; the code
    redeemed from a fresh address would hand her a working key after the lock: refused."""
    s = site
    code = CODE_RE.search(s.ok("ana", "user", "add", "zed", "--org", "internal"))
    assert code is not None
    s.ok("ben", "lock", "principal", "ana", "--reason", "insider")
    err = s.refused(None, "enroll", code.group(0), source="127.0.9.1")
    assert "locked" in err
    assert not s.events("enrollment.redeemed")[2:]  # ana and ben at start-up, nobody since
