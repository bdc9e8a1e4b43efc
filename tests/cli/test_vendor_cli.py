"""``garrison vendor …``, ``user add --role`` and ``key create --canary`` as subprocesses,
driving the admin API of a gateway running for the test's data directory.

Set-up that is not under test is written in-process (each subprocess costs half a second).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from garrison.domain import Level, PrincipalKind, Status, VendorStatus
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot
from tests.cli.conftest import Cli, Served
from tests.support.world import start_world, stop_world

pytestmark = pytest.mark.e2e

DAY = 86400.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def status_of(served: Served, vendor: str) -> str:
    ((status,),) = served.query("SELECT status FROM orgs WHERE name = ?", vendor)
    return str(status)


def add_vendor(directory: Directory, name: str, *, days: float = 10.5) -> str:
    now = time.time()
    directory.create_vendor(
        name,
        sponsor="admin",
        contract_start=now - DAY,
        contract_end=now + days * DAY,
        networks=["10.1.0.0/16"],
        seat_limit=3,
        ceiling_level=Level.INTERNAL,
        now=now,
    )
    return name


@pytest.fixture
def acme(served: Served) -> str:
    """An active vendor made in-process (the commands under test are the others)."""
    add_vendor(served.directory, "acme")
    served.directory.set_vendor_status("acme", VendorStatus.ACTIVE, now=time.time())
    return "acme"


# ── add, list, show, lifecycle ─────────────────────────────────────────────────────────────
def test_vendor_add_creates_an_onboarding_vendor_listed_as_json(served: Served) -> None:
    out = served.ok(
        "vendor", "add", "globex",
        "--sponsor", "admin",
        "--contract-end", iso(time.time() + 20.5 * DAY),
        "--network", "10.1.0.0/16",
        "--network", "2001:db8::/32",
        "--seats", "4",
        "--ceiling", "restricted",
    )  # fmt: skip
    (row,) = served.as_json("vendor", "list")
    assert row["id"] == out.strip() and row["id"].startswith("org_")
    assert (row["name"], row["status"], row["seat_limit"], row["ceiling"], row["days_left"]) == (
        "globex",
        "onboarding",
        4,
        "restricted",
        20,
    )


def test_vendor_show_json_carries_the_terms(served: Served) -> None:
    served.ok(
        "vendor", "add", "globex",
        "--sponsor", "admin",
        "--contract-end", "2099-01-01",
        "--network", "10.1.0.0/16",
        "--seats", "2",
        "--ceiling-compartment", "cyber",
        "--agreement", "MSA-9",
        "--security-review", "2026-03-01",
    )  # fmt: skip
    t = served.as_json("vendor", "show", "globex")["terms"]
    assert (t["status"], t["sponsor"], t["networks"]) == ("onboarding", "admin", ["10.1.0.0/16"])
    assert (t["seat_limit"], t["ceiling"], t["ceiling_compartments"]) == (2, "internal", ["cyber"])
    assert t["agreement_ref"] == "MSA-9"
    assert t["security_review_at"] == datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    assert t["contract_end"] == datetime(2099, 1, 1, tzinfo=UTC).timestamp()


def test_vendor_lifecycle_commands_move_the_status(served: Served) -> None:
    add_vendor(served.directory, "globex")
    seen = []
    for command in ("activate", "suspend", "activate", "offboard"):
        out = served.ok("vendor", command, "globex", "--reason", "test")
        assert out.startswith("globex: ")
        seen.append(status_of(served, "globex"))
    assert seen == ["active", "suspended", "active", "offboarded"]


def test_vendor_status_commands_are_audited_with_the_reason_naming_the_admin(
    served: Served,
) -> None:
    add_vendor(served.directory, "globex")
    served.ok("vendor", "activate", "globex", "--reason", "contract signed")
    (event,) = served.events("vendor.activated")
    assert event["data"]["reason"] == "contract signed"
    ((admin_id,),) = served.query("SELECT id FROM principals WHERE name = 'admin'")
    assert event["actor"] == admin_id  # the admin's principal, not a local user
    origin = event["data"]["origin"]
    assert (origin["via"], origin["admin"]) == ("admin-api", "admin")
    assert origin["client_address"] == "127.0.0.1" and origin["request_id"] == event["request_id"]


def test_illegal_transition_exits_2_with_a_clear_message(served: Served, acme: str) -> None:
    served.directory.set_vendor_status(acme, VendorStatus.OFFBOARDED, now=time.time())
    err = served.refused("vendor", "activate", acme)
    assert "a vendor cannot go from offboarded to active (allowed: none)" in err
    assert status_of(served, acme) == "offboarded"


def test_suspending_an_onboarding_vendor_names_the_allowed_targets(served: Served) -> None:
    add_vendor(served.directory, "globex")
    err = served.refused("vendor", "suspend", "globex")
    assert "from onboarding to suspended (allowed: active, offboarded)" in err
    assert status_of(served, "globex") == "onboarding"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--contract-start", "2000-01-01", "--contract-end", "2001-01-01", "--seats", "2"],
            "the contract end is in the past",
        ),
        (
            ["--contract-end", "2099-01-01", "--seats", "0"],
            "--seats: at least 1",  # the option typed, not the API field
        ),
        (["--contract-end", "next tuesday", "--seats", "2"], "is not an ISO date"),
    ],
    ids=["past-end", "no-seats", "bad-date"],
)
def test_vendor_add_with_bad_terms_exits_2_and_adds_nothing(
    served: Served, args: list[str], message: str
) -> None:
    command = ("vendor", "add", "globex", "--sponsor", "admin", "--network", "10.1.0.0/16")
    if "next tuesday" in args:  # the CLI checks dates itself (a usage error, no call made)
        err = served.usage_error(*command, *args)
    else:  # the admin API refuses the others
        err = served.refused(*command, *args)
    assert message in err
    assert served.query("SELECT name FROM orgs WHERE kind = 'vendor'") == []


def test_show_of_an_unknown_vendor_fails_cleanly(served: Served) -> None:
    assert "no vendor 'nobody'" in served.refused("vendor", "show", "nobody")


# ── roles ──────────────────────────────────────────────────────────────────────────────────
def add_with_two_admins(served: Served, *args: str) -> None:
    """A principal with a role is a two-person change: proposed, then applied by admin-2."""
    out = served.ok(*args)
    change_id = out.split(":")[0]
    assert change_id.startswith("chg_"), out
    second = served.make_principal("admin-2", roles=("security-admin",))
    served.ok("change", "approve", change_id, env={"GARRISON_ADMIN_KEY": second})


def test_user_add_with_a_vendor_role_is_stored_and_enforced_at_once(
    served: Served, acme: str
) -> None:
    add_with_two_admins(served, "user", "add", "vic", "--org", acme, "--role", "vendor-manager")
    snap = load_snapshot(served.directory.engine, Sealer.from_dir(served.settings.key_dir))
    (vic,) = [p for p in snap.principals.values() if p.name == "vic"]
    assert vic.roles == frozenset({"vendor-manager"})
    # The gateway loaded the change before the command returned.
    (live,) = [p for p in served.gateway.state.snapshot.principals.values() if p.name == "vic"]
    assert live.roles == frozenset({"vendor-manager"})


def test_user_list_shows_each_principals_roles(served: Served, acme: str) -> None:
    """Who holds which admin role must be visible to whoever administers the directory."""
    add_with_two_admins(served, "user", "add", "vic", "--org", acme, "--role", "vendor-manager")
    roles = {r["name"]: r.get("roles") for r in served.as_json("user", "list")}
    assert roles == {
        "admin": ["security-admin"],
        "admin-2": ["security-admin"],
        "vic": ["vendor-manager"],
    }


def test_user_add_refuses_an_admin_role_for_a_vendor_principal(served: Served, acme: str) -> None:
    err = served.refused("user", "add", "vic", "--org", acme, "--role", "security-admin")
    assert "a vendor principal may hold only the vendor-manager role" in err
    assert served.query("SELECT name FROM principals WHERE name = 'vic'") == []


def test_user_add_refuses_an_unknown_role(served: Served) -> None:
    # The CLI's own check (a click usage error, exit 2) refuses it before any call.
    err = served.usage_error("user", "add", "vic", "--org", "internal", "--role", "root")
    assert "'root' is not one of" in err
    assert served.query("SELECT name FROM principals WHERE name = 'vic'") == []


def test_user_add_refuses_clearance_above_the_vendor_ceiling(served: Served, acme: str) -> None:
    err = served.refused("user", "add", "vic", "--org", acme, "--clearance", "critical")
    assert "rule vendor-ceiling" in err


# ── canaries and secrets ───────────────────────────────────────────────────────────────────
@pytest.fixture
def canary(served: Served, acme: str) -> dict[str, dict[str, Any]]:
    """A canary key made through the CLI, beside an ordinary key of the same principal (a
    service account: admins make keys for nobody else, issue 12)."""
    now = time.time()
    directory = served.directory
    directory.create_principal(
        "vic", org=acme, kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=now
    )
    created: dict[str, Any] = served.as_json("key", "create", "vic", "--canary", "--note", "trap")
    plain = directory.create_key("vic", now=now)
    return {
        "canary": created,
        "plain": {"id": plain.key.key_id, "key": plain.key.token.reveal()},
    }


def test_canary_key_is_flagged_in_vendor_show(
    served: Served, canary: dict[str, dict[str, Any]]
) -> None:
    (vic,) = served.as_json("vendor", "show", "acme")["principals"]
    flags = {k["id"]: k["canary"] for k in vic["keys"]}
    assert flags == {canary["canary"]["id"]: True, canary["plain"]["id"]: False}


def test_canary_key_is_flagged_in_key_list(
    served: Served, canary: dict[str, dict[str, Any]]
) -> None:
    rows = {r["id"]: r for r in served.as_json("key", "list")}
    assert rows[canary["canary"]["id"]].get("canary") is True
    assert rows[canary["plain"]["id"]].get("canary") is False


def test_key_secret_is_never_printed_after_creation(
    served: Served, canary: dict[str, dict[str, Any]]
) -> None:
    tokens = [canary[k]["key"] for k in ("canary", "plain")]
    secrets = tokens + [t.split("_", 2)[2] for t in tokens]  # the secret part alone, too
    outputs = [
        served.ok("key", "list"),
        served.ok("key", "list", "--json"),
        served.ok("vendor", "show", "acme"),
        served.ok("vendor", "show", "acme", "--json"),
    ]
    for output in outputs:
        assert canary["canary"]["id"] in output  # the key is listed …
        for secret in secrets:
            assert secret not in output  # … its secret is not


# ── the report ─────────────────────────────────────────────────────────────────────────────
async def _used_world(root: Path) -> dict[str, Any]:
    """``vendor show contractor-co --json`` of the seeded world after bob made one call, with
    dan (no calls), eve (disabled) and a revoked key added to contractor-co, once bob-short
    has expired."""
    world = await start_world(root)
    try:
        d, now = world.directory, time.time()
        for name in ("dan", "eve"):
            d.create_principal(
                name, org="contractor-co", kind=PrincipalKind.HUMAN, clearance=Level.PUBLIC, now=now
            )
        d.set_principal_status("eve", Status.DISABLED, now=now)
        revoked = d.create_key("dan", now=now).key.key_id
        d.revoke_key(revoked, now=now, reason="test")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                world.base + "/v1/chat/completions",
                json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]},
                headers={"authorization": f"Bearer {world.keys['bob']}"},
            ) as resp,
        ):
            assert resp.status == 200, await resp.read()
        await world.settle()
        kid = {name: token.split("_", 2)[1] for name, token in world.keys.items()}
        short = world.gateway.state.snapshot.credentials[kid["bob-short"]].expires_at
        assert short is not None
        await asyncio.sleep(max(0.0, short - time.time()) + 0.05)
        # The command under test, against this world's running gateway.
        cli = Cli(config=root / "data" / "garrison.toml", url=world.base)
        shown: dict[str, Any] = await asyncio.to_thread(
            cli.as_json, "vendor", "show", "contractor-co"
        )
    finally:
        await stop_world(world)
    return {**shown, "_made": {"key_ids": kid, "revoked": revoked}}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``vendor show contractor-co --json`` of that world (run once for these tests)."""
    return asyncio.run(_used_world(tmp_path_factory.mktemp("vendor-report")))


def test_vendor_show_counts_active_seats(report: dict[str, Any]) -> None:
    assert report["seats_used"] == 2  # bob and dan; eve is disabled
    assert report["terms"]["seat_limit"] == 10


def test_vendor_show_lists_every_key_with_its_state(report: dict[str, Any]) -> None:
    people = {p["name"]: p for p in report["principals"]}
    assert {n: p["status"] for n, p in people.items()} == {
        "bob": "active",
        "dan": "active",
        "eve": "disabled",
    }
    states = {k["id"]: k["state"] for p in people.values() for k in p["keys"]}
    kid = report["_made"]["key_ids"]
    assert states == {
        kid["bob"]: "active",
        kid["bob-netbound"]: "active",
        kid["bob-short"]: "expired",
        report["_made"]["revoked"]: "revoked",
    }


def test_vendor_show_gives_last_use_and_source_of_a_used_key(report: dict[str, Any]) -> None:
    (bob,) = [p for p in report["principals"] if p["name"] == "bob"]
    used = [k for k in bob["keys"] if k["last_used"] is not None]
    assert [k["id"] for k in used] == [report["_made"]["key_ids"]["bob"]]
    assert used[0]["sources"] == ["127.0.0.1"]


def test_vendor_show_gives_contract_days_left(report: dict[str, Any]) -> None:
    assert report["contract_days_left"] == 29  # 30 days from seeding, less a few seconds


def test_vendor_show_does_not_call_accounts_created_within_the_window_dormant(
    report: dict[str, Any],
) -> None:
    assert report["dormant"] == []  # dan never called, but was created moments ago


def test_vendor_show_table_states_seats_days_left_and_dormant(served: Served, acme: str) -> None:
    now, directory = time.time(), served.directory
    for name in ("vic", "wes"):  # added 40 days ago, never used since
        directory.create_principal(
            name,
            org=acme,
            kind=PrincipalKind.HUMAN,
            clearance=Level.INTERNAL,
            now=now - 40 * 86400,
        )
    key = directory.create_key("vic", now=now).key.key_id
    out = served.ok("vendor", "show", acme)
    assert "seats 2/3" in out
    assert "(10 days left)" in out
    assert "dormant (no call in 30 days): vic, wes" in out
    (row,) = [line for line in out.splitlines() if key in line]
    assert "vic" in row and "active" in row
