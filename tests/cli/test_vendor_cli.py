"""``garrison vendor …``, ``user add --role`` and ``key create --canary`` as subprocesses.

Set-up that is not under test is written in-process (each subprocess costs half a second).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.bootstrap import init, open_directory
from garrison.config import load_settings
from garrison.domain import Level, PrincipalKind, Status, VendorStatus
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot
from tests.support.world import start_world, stop_world

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
DAY = 86400.0


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        # Wide enough that rich never wraps a report line.
        env={**os.environ, "COLUMNS": "250", "GARRISON_CONFIG": ""},
        check=False,
    )


def ok(config: Path, *args: str) -> str:
    out = run(config, *args)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return out.stdout


def as_json(config: Path, *args: str) -> Any:
    return json.loads(ok(config, *args, "--json"))


def refused(config: Path, *args: str) -> str:
    """The command fails with exit 2 and one clean line; returns that line."""
    out = run(config, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    return out.stderr


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def query(config: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(config.parent / "garrison.db")
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def status_of(config: Path, vendor: str) -> str:
    ((status,),) = query(config, "SELECT status FROM orgs WHERE name = ?", vendor)
    return str(status)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An initialised data directory; returns its config path."""
    return init(tmp_path / "data").config_path


@pytest.fixture
def directory(data: Path) -> Directory:
    return open_directory(load_settings(data), actor="test")


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
def acme(directory: Directory) -> str:
    """An active vendor made in-process (the commands under test are the others)."""
    add_vendor(directory, "acme")
    directory.set_vendor_status("acme", VendorStatus.ACTIVE, now=time.time())
    return "acme"


# ── add, list, show, lifecycle ─────────────────────────────────────────────────────────────
def test_vendor_add_creates_an_onboarding_vendor_listed_as_json(data: Path) -> None:
    out = ok(
        data,
        "vendor", "add", "globex",
        "--sponsor", "admin",
        "--contract-end", iso(time.time() + 20.5 * DAY),
        "--network", "10.1.0.0/16",
        "--network", "2001:db8::/32",
        "--seats", "4",
        "--ceiling", "restricted",
    )  # fmt: skip
    (row,) = as_json(data, "vendor", "list")
    assert row["id"] == out.strip() and row["id"].startswith("org_")
    assert (row["name"], row["status"], row["seats"], row["ceiling"], row["days_left"]) == (
        "globex",
        "onboarding",
        4,
        "restricted",
        20,
    )


def test_vendor_show_json_carries_the_terms(data: Path) -> None:
    ok(
        data,
        "vendor", "add", "globex",
        "--sponsor", "admin",
        "--contract-end", "2099-01-01",
        "--network", "10.1.0.0/16",
        "--seats", "2",
        "--ceiling-compartment", "cyber",
        "--agreement", "MSA-9",
        "--security-review", "2026-03-01",
    )  # fmt: skip
    t = as_json(data, "vendor", "show", "globex")["terms"]
    assert (t["status"], t["sponsor"], t["networks"]) == ("onboarding", "admin", ["10.1.0.0/16"])
    assert (t["seat_limit"], t["ceiling"], t["ceiling_compartments"]) == (2, "internal", ["cyber"])
    assert t["agreement_ref"] == "MSA-9"
    assert t["security_review_at"] == datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    assert t["contract_end"] == datetime(2099, 1, 1, tzinfo=UTC).timestamp()


def test_vendor_lifecycle_commands_move_the_status(data: Path, directory: Directory) -> None:
    add_vendor(directory, "globex")
    seen = []
    for command in ("activate", "suspend", "activate", "offboard"):
        out = ok(data, "vendor", command, "globex", "--reason", "test")
        assert out.startswith("globex: ")
        seen.append(status_of(data, "globex"))
    assert seen == ["active", "suspended", "active", "offboarded"]


def test_vendor_status_commands_are_audited_with_the_reason(
    data: Path, directory: Directory
) -> None:
    add_vendor(directory, "globex")
    ok(data, "vendor", "activate", "globex", "--reason", "contract signed")
    ((record,),) = query(data, "SELECT record FROM audit_events WHERE name = 'vendor.activated'")
    event = orjson.loads(record)
    assert event["data"]["reason"] == "contract signed"
    assert event["actor"].startswith("cli:")


def test_illegal_transition_exits_2_with_a_clear_message(
    data: Path, acme: str, directory: Directory
) -> None:
    directory.set_vendor_status(acme, VendorStatus.OFFBOARDED, now=time.time())
    err = refused(data, "vendor", "activate", acme)
    assert "a vendor cannot go from offboarded to active (allowed: none)" in err
    assert status_of(data, acme) == "offboarded"


def test_suspending_an_onboarding_vendor_names_the_allowed_targets(
    data: Path, directory: Directory
) -> None:
    add_vendor(directory, "globex")
    err = refused(data, "vendor", "suspend", "globex")
    assert "from onboarding to suspended (allowed: active, offboarded)" in err
    assert status_of(data, "globex") == "onboarding"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--contract-start", "2000-01-01", "--contract-end", "2001-01-01", "--seats", "2"],
            "the contract end is in the past",
        ),
        (["--contract-end", "2099-01-01", "--seats", "0"], "seat limit must be between"),
        (["--contract-end", "next tuesday", "--seats", "2"], "is not an ISO date"),
    ],
    ids=["past-end", "no-seats", "bad-date"],
)
def test_vendor_add_with_bad_terms_exits_2_and_adds_nothing(
    data: Path, args: list[str], message: str
) -> None:
    err = refused(
        data, "vendor", "add", "globex", "--sponsor", "admin", "--network", "10.1.0.0/16", *args
    )
    assert message in err
    assert query(data, "SELECT name FROM orgs WHERE kind = 'vendor'") == []


def test_show_of_an_unknown_vendor_fails_cleanly(data: Path) -> None:
    out = run(data, "vendor", "show", "nobody")
    assert out.returncode != 0
    assert "no vendor 'nobody'" in out.stderr and "Traceback" not in out.stderr


# ── roles ──────────────────────────────────────────────────────────────────────────────────
def test_user_add_with_a_vendor_role_is_stored(data: Path, acme: str, directory: Directory) -> None:
    ok(data, "user", "add", "vic", "--org", acme, "--role", "vendor-manager")
    snap = load_snapshot(directory.engine, Sealer.from_dir(data.parent / "keys"))
    (vic,) = [p for p in snap.principals.values() if p.name == "vic"]
    assert vic.roles == frozenset({"vendor-manager"})


def test_user_list_shows_each_principals_roles(data: Path, acme: str) -> None:
    """Who holds which admin role must be visible to whoever administers the directory."""
    ok(data, "user", "add", "vic", "--org", acme, "--role", "vendor-manager")
    roles = {r["name"]: r.get("roles") for r in as_json(data, "user", "list")}
    assert roles["vic"] in (["vendor-manager"], "vendor-manager")


def test_user_add_refuses_an_admin_role_for_a_vendor_principal(data: Path, acme: str) -> None:
    err = refused(data, "user", "add", "vic", "--org", acme, "--role", "security-admin")
    assert "a vendor principal may hold only the vendor-manager role" in err
    assert query(data, "SELECT name FROM principals WHERE name = 'vic'") == []


def test_user_add_refuses_an_unknown_role(data: Path) -> None:
    err = refused(data, "user", "add", "vic", "--org", "internal", "--role", "root")
    assert "unknown role(s) root" in err


def test_user_add_refuses_clearance_above_the_vendor_ceiling(data: Path, acme: str) -> None:
    err = refused(data, "user", "add", "vic", "--org", acme, "--clearance", "critical")
    assert "rule vendor-ceiling" in err


# ── canaries and secrets ───────────────────────────────────────────────────────────────────
@pytest.fixture
def canary(data: Path, acme: str, directory: Directory) -> dict[str, dict[str, Any]]:
    """A canary key made through the CLI, beside an ordinary key of the same person."""
    now = time.time()
    directory.create_principal(
        "vic", org=acme, kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    created: dict[str, Any] = as_json(data, "key", "create", "vic", "--canary", "--note", "trap")
    plain = directory.create_key("vic", now=now)
    return {
        "canary": created,
        "plain": {"id": plain.key.key_id, "key": plain.key.token.reveal()},
    }


def test_canary_key_is_flagged_in_vendor_show(
    data: Path, canary: dict[str, dict[str, Any]]
) -> None:
    (vic,) = as_json(data, "vendor", "show", "acme")["principals"]
    flags = {k["id"]: k["canary"] for k in vic["keys"]}
    assert flags == {canary["canary"]["id"]: True, canary["plain"]["id"]: False}


def test_canary_key_is_flagged_in_key_list(data: Path, canary: dict[str, dict[str, Any]]) -> None:
    rows = {r["id"]: r for r in as_json(data, "key", "list")}
    assert rows[canary["canary"]["id"]].get("canary") is True
    assert rows[canary["plain"]["id"]].get("canary") is False


def test_key_secret_is_never_printed_after_creation(
    data: Path, canary: dict[str, dict[str, Any]]
) -> None:
    tokens = [canary[k]["key"] for k in ("canary", "plain")]
    secrets = tokens + [t.split("_", 2)[2] for t in tokens]  # the secret part alone, too
    outputs = [
        ok(data, "key", "list"),
        ok(data, "key", "list", "--json"),
        ok(data, "vendor", "show", "acme"),
        ok(data, "vendor", "show", "acme", "--json"),
    ]
    for output in outputs:
        assert canary["canary"]["id"] in output  # the key is listed …
        for secret in secrets:
            assert secret not in output  # … its secret is not


# ── the report ─────────────────────────────────────────────────────────────────────────────
async def _used_world(root: Path) -> dict[str, Any]:
    """The seeded world after bob made one call, with dan (no calls), eve (disabled) and a
    revoked key added to contractor-co, once bob-short has expired."""
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
    finally:
        await stop_world(world)
    return {"key_ids": kid, "revoked": revoked}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``vendor show contractor-co --json`` of that world (run once for these tests)."""
    root = tmp_path_factory.mktemp("vendor-report")
    made = asyncio.run(_used_world(root))
    shown: dict[str, Any] = as_json(
        root / "data" / "garrison.toml", "vendor", "show", "contractor-co"
    )
    return {**shown, "_made": made}


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


def test_vendor_show_table_states_seats_days_left_and_dormant(
    data: Path, acme: str, directory: Directory
) -> None:
    now = time.time()
    for name in ("vic", "wes"):  # added 40 days ago, never used since
        directory.create_principal(
            name,
            org=acme,
            kind=PrincipalKind.HUMAN,
            clearance=Level.INTERNAL,
            now=now - 40 * 86400,
        )
    key = directory.create_key("vic", now=now).key.key_id
    out = ok(data, "vendor", "show", acme)
    assert "seats 2/3" in out
    assert "(10 days left)" in out
    assert "dormant (no call in 30 days): vic, wes" in out
    (row,) = [line for line in out.splitlines() if key in line]
    assert "vic" in row and "active" in row
