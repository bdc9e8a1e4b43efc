"""Just-in-time access and two-person changes in the store, with a fixed ``now``.

Access: a principal asks for a critical model they already dominate (their vendor's ceiling
permitting), one pending request per (principal, model); approvers (never the requester,
each once) approve — two for critical, one internal, the sponsor for a vendor's principal —
and the second approval creates a grant from that instant for the requested duration; an
approver denies, the requester cancels, a request nobody decided lapses after the TTL;
grants are revoked by their holder or by whoever may revoke all. Every step is one
transaction with its audit event; a refusal writes nothing.

Changes: ``propose`` stores a pending change, ``pending`` hands it only to a second admin
while it is live, applying it marks it approved inside the applying transaction (so a change
no longer pending rolls the application back), ``deny``, ``list_changes``, ``set_policy``,
``current_policy`` and ``close_unchanged``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from garrison.bootstrap import FIRST_ADMIN, init, open_directory
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, Status, UpstreamApi, VendorStatus
from garrison.domain.access import (
    ACCESS_REQUEST_TTL_S,
    CRITICAL_APPROVALS,
    GRANT_MAX_DURATION_S,
    IllegalAccessTransition,
)
from garrison.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.keyring import Sealer
from garrison.store import Directory, access, changes, load_snapshot
from garrison.store.access import ACCESS_REASON_MAX_CHARS
from garrison.store.changes import CHANGE_TTL_S
from garrison.store.db import write_transaction
from tests.store.conftest import BACKENDS
from tests.support import db, pg
from tests.support.store_copies import template_database, working_copy

NOW = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0
MAX_GRANT = GRANT_MAX_DURATION_S[Level.CRITICAL]
TABLES = (
    "access_requests",
    "grants",
    "pending_changes",
    "policy_sets",
    "audit_events",
    "change_feed",
    "principals",
    "models",
    "orgs",
)
ACCESS_EVENTS = (
    "access.requested",
    "access.approved",
    "access.granted",
    "access.denied",
    "access.cancelled",
    "access.expired",
    "grant.revoked",
)


# ── the directory every test starts from ─────────────────────────────────────────────────
PEOPLE: dict[str, dict[str, Any]] = {
    # name: create_principal keywords (org internal unless given)
    "alice": {"clearance": Level.CRITICAL, "compartments": ["cyber"]},  # the usual requester
    "carol": {"clearance": Level.RESTRICTED},  # does not dominate a critical model
    "dora": {"clearance": Level.CRITICAL},  # critical, but not in "cyber"
    "gone": {"clearance": Level.CRITICAL},  # disabled below
    "plain": {"clearance": Level.INTERNAL},  # no roles
    "appr-1": {"clearance": Level.CRITICAL, "roles": ["approver"]},  # may also ask
    "appr-2": {"clearance": Level.INTERNAL, "roles": ["approver"]},
    "appr-3": {"clearance": Level.INTERNAL, "roles": ["approver"]},
    "idle-approver": {"clearance": Level.INTERNAL, "roles": ["approver"]},  # disabled below
    "sponsor": {"clearance": Level.INTERNAL, "roles": ["approver"]},  # acme's sponsor
    "sec-2": {"clearance": Level.INTERNAL, "roles": ["security-admin"]},  # no approver role
}


@pytest.fixture(scope="module", params=BACKENDS)
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str], str | None]]:
    """One initialised, seeded directory per module and backend; each test works on a copy."""
    if request.param == "postgresql":
        pg.require()
    with template_database(request.param) as url:
        yield _seed(tmp_path_factory, url)


def _seed(
    tmp_path_factory: pytest.TempPathFactory, url: str | None
) -> tuple[Path, dict[str, str], str | None]:
    data = tmp_path_factory.mktemp("access-template") / "data"
    initialized = init(data, database_url=url)
    d = open_directory(initialized.settings, actor="seed")
    ids: dict[str, str] = {}
    for name, kw in PEOPLE.items():
        ids[name] = d.create_principal(
            name, org="internal", kind=PrincipalKind.HUMAN, now=NOW, **kw
        )
    ids["acme"] = d.create_vendor(
        "acme",
        sponsor="sponsor",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.1.0.0/16"],
        seat_limit=5,
        ceiling_level=Level.CRITICAL,
        ceiling_compartments=["cyber"],
        now=NOW,
    )
    d.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    for name in ("vera", "vx-1", "vx-2"):
        ids[name] = d.create_principal(
            name,
            org="acme",
            kind=PrincipalKind.HUMAN,
            clearance=Level.CRITICAL,
            compartments=["cyber"],
            now=NOW,
        )
    for name in ("gone", "idle-approver"):
        d.set_principal_status(name, Status.DISABLED, now=NOW)
    common: dict[str, Any] = {
        "upstream_url": "http://127.0.0.1:9/v1",
        "upstream_model": "mock-small",
        "api": UpstreamApi.OPENAI,
        "auth_style": AuthStyle.NONE,
        "now": NOW,
    }
    ids["oracle"] = d.create_model("oracle", level=Level.CRITICAL, **common)
    ids["cyber-oracle"] = d.create_model(
        "cyber-oracle", level=Level.CRITICAL, compartments=["cyber"], **common
    )
    ids["assistant"] = d.create_model("assistant", level=Level.INTERNAL, **common)
    ids["secret-model"] = d.create_model("secret-model", level=Level.RESTRICTED, **common)
    ids[FIRST_ADMIN] = db.row(d, "principals", FIRST_ADMIN)["id"]
    d.engine.dispose()  # no connection open while tests copy the files (or the database)
    return data, ids, url


@dataclass
class Setup:
    settings: Settings
    d: Directory  # actor "seed" (set-up only)
    ids: dict[str, str]

    def as_(self, name: str, origin: dict[str, Any] | None = None) -> Directory:
        """The directory acting as the principal ``name`` (actors are principal ids)."""
        directory = open_directory(self.settings, engine=self.d.engine, actor=self.ids[name])
        directory.origin = origin
        return directory

    def sql(self, query: str, *params: Any) -> None:
        """A direct write, for set-up the directory itself would never allow."""
        text, bound = _params(query, params)
        db.sql(self.d, text, **bound)

    def request(self, who: str = "alice", model: str = "oracle", **kw: Any) -> dict[str, Any]:
        kw.setdefault("duration_s", 2 * HOUR)
        kw.setdefault("reason", "incident INC-7: triage")
        kw.setdefault("now", NOW)
        return access.request_access(self.as_(who), model, **kw)

    def approve(self, who: str, request_id: str, now: float = NOW + 60) -> dict[str, Any]:
        return access.approve(self.as_(who), request_id, now=now)


@pytest.fixture
def s(tmp_path: Path, template: tuple[Path, dict[str, str], str | None]) -> Iterator[Setup]:
    source, ids, url = template
    with working_copy(source, url, tmp_path / "data") as settings:
        d = open_directory(settings, actor="seed")
        try:
            yield Setup(settings, d, dict(ids))
        finally:
            d.engine.dispose()


# ── reading the database back ────────────────────────────────────────────────────────────
def _params(query: str, params: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """``?`` placeholders as named ones, for either backend."""
    names = iter(range(len(params)))
    text = re.sub(r"\?", lambda _: f":p{next(names)}", query)
    return text, {f"p{i}": v for i, v in enumerate(params)}


def rows(s: Setup, query: str, *params: Any) -> list[dict[str, Any]]:
    text, bound = _params(query, params)
    return db.rows(s.d, text, **bound)


def counts(s: Setup) -> dict[str, int]:
    every = db.row_counts(s.d)
    return {t: every[t] for t in TABLES}


def everything(s: Setup) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables these writes touch."""
    return {
        t: rows(s, f"SELECT * FROM {t} ORDER BY 1")  # noqa: S608 - fixed names
        for t in ("access_requests", "grants", "pending_changes", "policy_sets", "principals")
    }


def events(s: Setup, *names: str) -> list[dict[str, Any]]:
    out = []
    for record in db.recorded(s.d):
        decoded = orjson.loads(record)
        if not names or decoded["name"] in names:
            out.append(decoded)
    return out


def request_row(s: Setup, request_id: str) -> dict[str, Any]:
    (row,) = rows(s, "SELECT * FROM access_requests WHERE id = ?", request_id)
    return row


def grant_rows(s: Setup) -> list[dict[str, Any]]:
    return rows(s, "SELECT * FROM grants ORDER BY starts_at")


@contextmanager
def nothing_written(s: Setup, exc: type[Exception], match: str) -> Iterator[None]:
    """The block raises ``exc`` matching ``match``; no row of any table changes."""
    before_counts, before_rows = counts(s), everything(s)
    with pytest.raises(exc, match=match):
        yield
    assert counts(s) == before_counts
    assert everything(s) == before_rows


# ── asking ───────────────────────────────────────────────────────────────────────────────
def test_a_request_is_stored_pending_with_its_event(s: Setup) -> None:
    feed_before = counts(s)["change_feed"]
    created = s.request(reason="  incident INC-7: triage  ", duration_s=3 * HOUR)
    row = request_row(s, created["id"])
    assert created["id"].startswith("acr_")
    assert created["model"] == "oracle" and created["approvals"] == []
    assert row["principal_id"] == s.ids["alice"] and row["model_id"] == s.ids["oracle"]
    assert row["status"] == "pending"
    assert row["reason"] == "incident INC-7: triage"  # trimmed
    assert row["duration_s"] == 3 * HOUR
    assert row["created_at"] == NOW
    assert row["expires_at"] == NOW + ACCESS_REQUEST_TTL_S
    assert orjson.loads(row["approvals"]) == []
    assert row["decided_at"] is None and row["decided_by"] is None
    (event,) = events(s, "access.requested")
    assert event["actor"] == s.ids["alice"]  # the requester acts
    assert event["principal_id"] == s.ids["alice"]
    assert event["model"] == "oracle"
    assert event["at"] == NOW
    assert event["data"] == {
        "request_id": created["id"],
        "model_id": s.ids["oracle"],
        "duration_s": 3 * HOUR,
        "reason": "incident INC-7: triage",
        "approvals_needed": CRITICAL_APPROVALS,
    }
    # A request changes nothing the gateway enforces: no snapshot reload (no change-feed row).
    assert counts(s)["change_feed"] == feed_before
    assert grant_rows(s) == []  # asking grants nothing


def test_a_model_may_be_named_by_id(s: Setup) -> None:
    created = s.request(model=s.ids["cyber-oracle"])
    assert created["model"] == "cyber-oracle"


def test_the_longest_grant_and_reason_are_accepted(s: Setup) -> None:
    created = s.request(duration_s=MAX_GRANT, reason="r" * ACCESS_REASON_MAX_CHARS)
    assert request_row(s, created["id"])["duration_s"] == MAX_GRANT


@pytest.mark.parametrize(
    ("who", "model", "kw", "exc", "match"),
    [
        # One answer for every model out of reach (no oracle on existence or level).
        ("alice", "assistant", {}, NotFound, "No such model"),
        ("alice", "secret-model", {}, NotFound, "No such model"),
        ("alice", "no-such-model", {}, NotFound, "No such model"),
        ("alice", "oracle", {"duration_s": 0}, BadRequest, "at most 8 hours"),
        ("alice", "oracle", {"duration_s": -60}, BadRequest, "at most 8 hours"),
        ("alice", "oracle", {"duration_s": MAX_GRANT + 1}, BadRequest, "at most 8 hours"),
        ("alice", "oracle", {"reason": ""}, BadRequest, "reason is required"),
        ("alice", "oracle", {"reason": " \t\n"}, BadRequest, "reason is required"),
        (
            "alice",
            "oracle",
            {"reason": "r" * (ACCESS_REASON_MAX_CHARS + 1)},
            BadRequest,
            "longer than 500",
        ),
        ("carol", "oracle", {}, NotFound, "No such model"),  # clearance too low
        ("dora", "cyber-oracle", {}, NotFound, "No such model"),  # compartment
        ("gone", "oracle", {}, Forbidden, "inactive principal"),
    ],
    ids=[
        "internal-model",
        "restricted-model",
        "unknown-model",
        "zero-duration",
        "negative-duration",
        "over-8h",
        "empty-reason",
        "blank-reason",
        "long-reason",
        "clearance",
        "compartment",
        "disabled",
    ],
)
def test_refused_requests_write_nothing(
    s: Setup, who: str, model: str, kw: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with nothing_written(s, exc, match):
        s.request(who, model, **kw)


def test_a_vendor_ceiling_below_the_model_refuses(s: Setup) -> None:
    # The directory keeps people within their vendor's ceiling; the request checks anyway.
    s.sql("UPDATE orgs SET ceiling_level = ? WHERE name = 'acme'", int(Level.RESTRICTED))
    with nothing_written(s, NotFound, "No such model"):
        s.request("vera", "cyber-oracle")
    s.sql(
        "UPDATE orgs SET ceiling_level = ?, ceiling_compartments = '[]' WHERE name = 'acme'",
        int(Level.CRITICAL),
    )
    with nothing_written(s, NotFound, "No such model"):
        s.request("vera", "cyber-oracle")
    s.request("vera", "oracle")  # no compartment: within the ceiling


def test_one_pending_request_per_principal_and_model(s: Setup) -> None:
    first = s.request()
    with nothing_written(s, Conflict, f"already pending \\({first['id']}\\)"):
        s.request(now=NOW + ACCESS_REQUEST_TTL_S - 1)
    # other models, other principals: their own slots
    s.request(model="cyber-oracle")
    s.request("appr-1")
    # once the first lapses, the principal may ask again
    again = s.request(now=NOW + ACCESS_REQUEST_TTL_S)
    assert again["id"] != first["id"]


@pytest.mark.parametrize("end", ["denied", "cancelled", "approved"])
def test_a_decided_request_frees_the_slot(s: Setup, end: str) -> None:
    first = s.request()
    if end == "denied":
        access.deny(s.as_("appr-2"), first["id"], reason="no", now=NOW + 1)
    elif end == "cancelled":
        access.cancel(s.as_("alice"), first["id"], now=NOW + 1)
    else:
        s.approve("appr-2", first["id"], now=NOW + 1)
        s.approve("appr-3", first["id"], now=NOW + 1)
    s.request(now=NOW + 2)


# ── approving ────────────────────────────────────────────────────────────────────────────
def test_two_internal_approvals_grant_access_from_the_second(s: Setup) -> None:
    created = s.request(duration_s=2 * HOUR)
    first = s.approve("appr-2", created["id"], now=NOW + 60)
    assert first == {
        "id": created["id"],
        "status": "pending",
        "approvals": [s.ids["appr-2"]],
        "grant_id": None,
    }
    row = request_row(s, created["id"])
    assert row["status"] == "pending" and orjson.loads(row["approvals"]) == [s.ids["appr-2"]]
    assert grant_rows(s) == []

    second = s.approve("appr-3", created["id"], now=NOW + 600)
    assert second["status"] == "approved"
    assert second["approvals"] == [s.ids["appr-2"], s.ids["appr-3"]]
    row = request_row(s, created["id"])
    assert row["status"] == "approved"
    assert row["decided_at"] == NOW + 600 and row["decided_by"] == s.ids["appr-3"]
    (grant,) = grant_rows(s)
    assert grant["id"] == second["grant_id"] and grant["id"].startswith("gnt_")
    assert grant["request_id"] == created["id"]
    assert grant["principal_id"] == s.ids["alice"] and grant["model_id"] == s.ids["oracle"]
    # the grant starts when it is granted (not when asked) and lasts what was asked
    assert grant["starts_at"] == NOW + 600
    assert grant["expires_at"] == NOW + 600 + 2 * HOUR
    assert grant["revoked_at"] is None

    approved = events(s, "access.approved")
    assert [e["actor"] for e in approved] == [s.ids["appr-2"], s.ids["appr-3"]]
    assert [e["data"]["complete"] for e in approved] == [False, True]
    assert all(e["principal_id"] == s.ids["alice"] for e in approved)
    assert all(e["model"] == "oracle" for e in approved)
    (granted,) = events(s, "access.granted")
    assert granted["actor"] == s.ids["appr-3"] and granted["at"] == NOW + 600
    assert granted["principal_id"] == s.ids["alice"] and granted["model"] == "oracle"
    assert granted["data"] == {
        "grant_id": grant["id"],
        "request_id": created["id"],
        "expires_at": NOW + 600 + 2 * HOUR,
        "approvals": [s.ids["appr-2"], s.ids["appr-3"]],
    }


def test_the_grant_window_in_the_snapshot(s: Setup) -> None:
    created = s.request(duration_s=HOUR)
    s.approve("appr-2", created["id"], now=NOW + 10)
    s.approve("appr-3", created["id"], now=NOW + 20)
    snap = load_snapshot(s.d.engine, Sealer.from_dir(s.settings.key_dir))
    alice, oracle = s.ids["alice"], s.ids["oracle"]
    assert not snap.has_grant(alice, oracle, NOW + 19)  # before it was granted
    assert snap.has_grant(alice, oracle, NOW + 20)
    assert snap.has_grant(alice, oracle, NOW + 20 + HOUR - 1)
    assert not snap.has_grant(alice, oracle, NOW + 20 + HOUR)
    assert not snap.has_grant(alice, s.ids["cyber-oracle"], NOW + 30)  # that model only
    assert not snap.has_grant(s.ids["appr-1"], oracle, NOW + 30)  # that principal only


@pytest.mark.parametrize(
    ("who", "match"),
    [
        ("plain", "rule approver-role"),
        ("sec-2", "rule approver-role"),  # a security-admin is no approver
        (FIRST_ADMIN, "rule approver-role"),
        ("idle-approver", "only an active approver"),
    ],
    ids=["no-role", "security-admin", "first-admin", "disabled-approver"],
)
def test_only_an_active_approver_approves_or_denies(s: Setup, who: str, match: str) -> None:
    created = s.request()
    with nothing_written(s, Forbidden, match):
        s.approve(who, created["id"])
    with nothing_written(s, Forbidden, match):
        access.deny(s.as_(who), created["id"], reason="no", now=NOW + 60)


def test_nobody_approves_or_denies_their_own_request(s: Setup) -> None:
    created = s.request("appr-1")  # an approver asking for themselves
    with nothing_written(s, Forbidden, "rule no-self-approval"):
        s.approve("appr-1", created["id"])
    with nothing_written(s, Forbidden, "rule no-self-approval"):
        access.deny(s.as_("appr-1"), created["id"], reason="no", now=NOW + 60)
    # the others still can
    s.approve("appr-2", created["id"])
    assert s.approve("appr-3", created["id"])["status"] == "approved"


def test_an_approver_counts_once(s: Setup) -> None:
    created = s.request()
    s.approve("appr-2", created["id"], now=NOW + 10)
    with nothing_written(s, Conflict, "rule distinct-approvers"):
        s.approve("appr-2", created["id"], now=NOW + 20)
    assert request_row(s, created["id"])["status"] == "pending"


def test_a_vendor_principal_needs_the_sponsor(s: Setup) -> None:
    created = s.request("vera", "cyber-oracle")
    s.approve("appr-2", created["id"], now=NOW + 10)
    two = s.approve("appr-3", created["id"], now=NOW + 20)
    # two distinct internal approvers are not enough without the sponsor
    assert two["status"] == "pending" and two["grant_id"] is None
    assert len(two["approvals"]) == 2
    assert grant_rows(s) == []
    assert [e["data"]["complete"] for e in events(s, "access.approved")] == [False, False]
    done = s.approve("sponsor", created["id"], now=NOW + 30)
    assert done["status"] == "approved"
    assert done["approvals"] == [s.ids["appr-2"], s.ids["appr-3"], s.ids["sponsor"]]
    (grant,) = grant_rows(s)
    assert grant["principal_id"] == s.ids["vera"] and grant["starts_at"] == NOW + 30


def test_the_sponsor_and_one_other_are_enough_for_a_vendor(s: Setup) -> None:
    created = s.request("vera", "oracle")
    assert s.approve("sponsor", created["id"], now=NOW + 10)["status"] == "pending"
    assert s.approve("appr-2", created["id"], now=NOW + 20)["status"] == "approved"


def test_one_approver_must_be_internal(s: Setup) -> None:
    # The directory never lets a vendor's people hold the approver role; written directly.
    s.sql(
        "UPDATE principals SET roles = '[\"approver\"]' WHERE name IN ('vx-1', 'vx-2')",
    )
    created = s.request()
    s.approve("vx-1", created["id"], now=NOW + 10)
    outsiders = s.approve("vx-2", created["id"], now=NOW + 20)
    assert outsiders["status"] == "pending" and grant_rows(s) == []
    assert s.approve("appr-2", created["id"], now=NOW + 30)["status"] == "approved"


def test_a_decided_request_cannot_move_again(s: Setup) -> None:
    created = s.request()
    s.approve("appr-2", created["id"])
    s.approve("appr-3", created["id"])
    with nothing_written(s, IllegalAccessTransition, "approved cannot become approved"):
        s.approve("sponsor", created["id"])
    with nothing_written(s, IllegalAccessTransition, "approved cannot become denied"):
        access.deny(s.as_("sponsor"), created["id"], reason="late", now=NOW + 90)
    with nothing_written(s, IllegalAccessTransition, "approved cannot become cancelled"):
        access.cancel(s.as_("alice"), created["id"], now=NOW + 90)
    assert len(grant_rows(s)) == 1


@pytest.mark.parametrize("action", ["approve", "deny", "cancel"], ids=["approve", "deny", "cancel"])
def test_unknown_requests(s: Setup, action: str) -> None:
    with nothing_written(s, NotFound, "no access request"):
        if action == "approve":
            s.approve("appr-2", "acr_0000000000000000")
        elif action == "deny":
            access.deny(s.as_("appr-2"), "acr_0000000000000000", reason="x", now=NOW)
        else:
            access.cancel(s.as_("alice"), "acr_0000000000000000", now=NOW)


# ── lapsing ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("action", ["approve", "deny", "cancel"])
def test_a_request_lapses_at_the_ttl(s: Setup, action: str) -> None:
    created = s.request()
    s.approve("appr-2", created["id"], now=NOW + 10)
    lapse = NOW + ACCESS_REQUEST_TTL_S
    before = len(events(s))
    if action == "approve":
        result = s.approve("appr-3", created["id"], now=lapse)
    elif action == "deny":
        result = access.deny(s.as_("appr-3"), created["id"], reason="late", now=lapse)
    else:
        result = access.cancel(s.as_("alice"), created["id"], now=lapse)
    assert result == {"id": created["id"], "status": "expired"}
    assert request_row(s, created["id"])["status"] == "expired"
    assert grant_rows(s) == []
    new = events(s)[before:]
    assert [e["name"] for e in new] == ["access.expired"]
    assert new[0]["principal_id"] == s.ids["alice"] and new[0]["at"] == lapse
    assert new[0]["data"]["request_id"] == created["id"]
    # and it stays expired
    with nothing_written(s, IllegalAccessTransition, "expired cannot become approved"):
        s.approve("appr-3", created["id"], now=lapse + 1)


def test_just_before_the_ttl_the_request_is_live(s: Setup) -> None:
    created = s.request()
    s.approve("appr-2", created["id"], now=NOW + 10)
    done = s.approve("appr-3", created["id"], now=NOW + ACCESS_REQUEST_TTL_S - 0.001)
    assert done["status"] == "approved"
    assert events(s, "access.expired") == []


def test_listing_shows_a_lapsed_request_expired_without_writing(s: Setup) -> None:
    created = s.request()
    before = everything(s)
    with s.d.engine.connect() as conn:
        live = access.list_requests(conn, NOW + 1)
        lapsed = access.list_requests(conn, NOW + ACCESS_REQUEST_TTL_S)
        waiting = access.awaiting(conn, s.ids["appr-2"], NOW + ACCESS_REQUEST_TTL_S)
    assert [r["status"] for r in live] == ["pending"]
    assert [r["status"] for r in lapsed] == ["expired"]
    assert waiting == []
    assert everything(s) == before
    assert lapsed[0]["id"] == created["id"]


# ── denying and cancelling ───────────────────────────────────────────────────────────────
def test_an_approver_denies_with_a_reason(s: Setup) -> None:
    created = s.request()
    s.approve("appr-2", created["id"], now=NOW + 10)  # an earlier approval does not matter
    with nothing_written(s, BadRequest, "reason is required"):
        access.deny(s.as_("appr-3"), created["id"], reason="  ", now=NOW + 20)
    result = access.deny(s.as_("appr-3"), created["id"], reason=" not on call ", now=NOW + 20)
    assert result == {"id": created["id"], "status": "denied"}
    row = request_row(s, created["id"])
    assert row["status"] == "denied"
    assert row["decided_by"] == s.ids["appr-3"] and row["decided_at"] == NOW + 20
    assert row["decision_reason"] == "not on call"
    (event,) = events(s, "access.denied")
    assert event["actor"] == s.ids["appr-3"] and event["principal_id"] == s.ids["alice"]
    assert event["data"] == {"request_id": created["id"], "reason": "not on call"}
    assert grant_rows(s) == []
    with nothing_written(s, IllegalAccessTransition, "denied cannot become approved"):
        s.approve("sponsor", created["id"], now=NOW + 30)


def test_only_the_requester_cancels(s: Setup) -> None:
    created = s.request()
    for other in ("appr-2", "carol", FIRST_ADMIN):
        with nothing_written(s, NotFound, "no access request"):
            access.cancel(s.as_(other), created["id"], now=NOW + 10)
    result = access.cancel(s.as_("alice"), created["id"], now=NOW + 10)
    assert result == {"id": created["id"], "status": "cancelled"}
    row = request_row(s, created["id"])
    assert row["status"] == "cancelled"
    assert row["decided_by"] == s.ids["alice"] and row["decided_at"] == NOW + 10
    (event,) = events(s, "access.cancelled")
    assert event["actor"] == s.ids["alice"]
    assert event["data"] == {"request_id": created["id"]}
    with nothing_written(s, IllegalAccessTransition, "cancelled cannot become cancelled"):
        access.cancel(s.as_("alice"), created["id"], now=NOW + 20)
    with nothing_written(s, IllegalAccessTransition, "cancelled cannot become approved"):
        s.approve("appr-2", created["id"], now=NOW + 20)


# ── revoking grants ──────────────────────────────────────────────────────────────────────
def granted(s: Setup, who: str = "alice", duration_s: float = 2 * HOUR) -> str:
    created = s.request(who, duration_s=duration_s)
    s.approve("appr-2", created["id"], now=NOW + 10)
    grant_id = s.approve("appr-3", created["id"], now=NOW + 20)["grant_id"]
    assert isinstance(grant_id, str)
    return grant_id


def test_a_holder_revokes_their_own_grant(s: Setup) -> None:
    grant_id = granted(s)
    with nothing_written(s, BadRequest, "reason is required"):
        access.revoke_grant(s.as_("alice"), grant_id, reason="", now=NOW + 30, allowed_all=False)
    result = access.revoke_grant(
        s.as_("alice"), grant_id, reason=" done early ", now=NOW + 30, allowed_all=False
    )
    assert result == {"id": grant_id, "status": "revoked"}
    (grant,) = grant_rows(s)
    assert grant["revoked_at"] == NOW + 30 and grant["revoked_by"] == s.ids["alice"]
    (event,) = events(s, "grant.revoked")
    assert event["actor"] == s.ids["alice"] and event["principal_id"] == s.ids["alice"]
    assert event["data"] == {"grant_id": grant_id, "reason": "done early"}
    snap = load_snapshot(s.d.engine, Sealer.from_dir(s.settings.key_dir))
    assert not snap.has_grant(s.ids["alice"], s.ids["oracle"], NOW + 31)
    with nothing_written(s, Conflict, "already ended"):
        access.revoke_grant(s.as_("appr-2"), grant_id, reason="x", now=NOW + 40, allowed_all=True)


def test_someone_elses_grant_needs_allowed_all(s: Setup) -> None:
    grant_id = granted(s)
    with nothing_written(s, NotFound, "no grant"):
        access.revoke_grant(s.as_("carol"), grant_id, reason="x", now=NOW + 30, allowed_all=False)
    access.revoke_grant(s.as_("appr-2"), grant_id, reason="x", now=NOW + 30, allowed_all=True)
    (grant,) = grant_rows(s)
    assert grant["revoked_by"] == s.ids["appr-2"]


def test_an_ended_or_unknown_grant_is_not_revoked(s: Setup) -> None:
    grant_id = granted(s, duration_s=HOUR)
    end = NOW + 20 + HOUR
    with nothing_written(s, Conflict, "already ended"):
        access.revoke_grant(s.as_("alice"), grant_id, reason="x", now=end, allowed_all=False)
    with nothing_written(s, NotFound, "no grant"):
        access.revoke_grant(
            s.as_("appr-2"), "gnt_0000000000000000", reason="x", now=NOW, allowed_all=True
        )


def test_grants_list_with_their_state(s: Setup) -> None:
    first = granted(s, "alice", duration_s=HOUR)
    second = granted(s, "appr-1", duration_s=2 * HOUR)
    access.revoke_grant(s.as_("appr-1"), second, reason="x", now=NOW + 30, allowed_all=False)
    with s.d.engine.connect() as conn:
        live = {g["id"]: g["state"] for g in access.list_grants(conn, NOW + 40)}
        later = {g["id"]: g["state"] for g in access.list_grants(conn, NOW + 20 + HOUR)}
        mine = access.list_grants(conn, NOW + 40, principal_id=s.ids["alice"])
    assert live == {first: "active", second: "revoked"}
    assert later == {first: "expired", second: "revoked"}
    assert [g["id"] for g in mine] == [first]
    assert mine[0]["principal"] == "alice" and mine[0]["model"] == "oracle"


def test_requests_list_and_awaiting(s: Setup) -> None:
    mine = s.request("appr-1", now=NOW)
    theirs = s.request("alice", now=NOW + 1)
    s.approve("appr-2", theirs["id"], now=NOW + 2)
    with s.d.engine.connect() as conn:
        every = access.list_requests(conn, NOW + 3)
        alices = access.list_requests(conn, NOW + 3, principal_id=s.ids["alice"])
        for_appr_1 = access.awaiting(conn, s.ids["appr-1"], NOW + 3)
        for_appr_2 = access.awaiting(conn, s.ids["appr-2"], NOW + 3)
        for_appr_3 = access.awaiting(conn, s.ids["appr-3"], NOW + 3)
    assert [r["id"] for r in every] == [theirs["id"], mine["id"]]  # newest first
    assert [r["id"] for r in alices] == [theirs["id"]]
    assert alices[0]["approvals"] == [s.ids["appr-2"]]
    assert alices[0]["principal"] == "alice" and alices[0]["model"] == "oracle"
    assert [r["id"] for r in for_appr_1] == [theirs["id"]]  # not their own
    assert [r["id"] for r in for_appr_2] == [mine["id"]]  # not one already approved
    assert {r["id"] for r in for_appr_3} == {mine["id"], theirs["id"]}


def test_every_step_is_an_event_with_the_actor(s: Setup) -> None:
    a = s.request()
    s.approve("appr-2", a["id"], now=NOW + 1)
    s.approve("appr-3", a["id"], now=NOW + 2)
    b = s.request("appr-1", now=NOW + 3)
    access.deny(s.as_("appr-2"), b["id"], reason="no", now=NOW + 4)
    c = s.request("vera", "oracle", now=NOW + 5)
    access.cancel(s.as_("vera"), c["id"], now=NOW + 6)
    e = s.request("dora", "oracle", now=NOW + 7)
    s.approve("appr-2", e["id"], now=NOW + 7 + ACCESS_REQUEST_TTL_S)
    (grant,) = grant_rows(s)
    access.revoke_grant(s.as_("sponsor"), grant["id"], reason="x", now=NOW + 8, allowed_all=True)
    got = [(ev["name"], ev["actor"], ev["at"]) for ev in events(s, *ACCESS_EVENTS)]
    ids = s.ids
    assert got == [
        ("access.requested", ids["alice"], NOW),
        ("access.approved", ids["appr-2"], NOW + 1),
        ("access.approved", ids["appr-3"], NOW + 2),
        ("access.granted", ids["appr-3"], NOW + 2),
        ("access.requested", ids["appr-1"], NOW + 3),
        ("access.denied", ids["appr-2"], NOW + 4),
        ("access.requested", ids["vera"], NOW + 5),
        ("access.cancelled", ids["vera"], NOW + 6),
        ("access.requested", ids["dora"], NOW + 7),
        ("access.expired", ids["appr-2"], NOW + 7 + ACCESS_REQUEST_TTL_S),
        ("grant.revoked", ids["sponsor"], NOW + 8),
    ]


# ── two-person changes ───────────────────────────────────────────────────────────────────
def propose_raise(s: Setup, now: float = NOW) -> dict[str, Any]:
    return changes.propose(
        s.as_(FIRST_ADMIN),
        "principal-access",
        s.ids["carol"],
        {"clearance": "critical"},
        "raise carol to critical",
        now=now,
    )


def change_row(s: Setup, change_id: str) -> dict[str, Any]:
    (row,) = rows(s, "SELECT * FROM pending_changes WHERE id = ?", change_id)
    return row


def carol_clearance(s: Setup) -> int:
    (row,) = rows(s, "SELECT clearance FROM principals WHERE name = 'carol'")
    return int(row["clearance"])


def test_propose_stores_a_pending_change(s: Setup) -> None:
    proposal = propose_raise(s)
    assert proposal["id"].startswith("chg_")
    assert "payload" not in proposal
    assert proposal["status"] == "pending"
    assert proposal["requested_by"] == s.ids[FIRST_ADMIN]
    assert proposal["expires_at"] == NOW + CHANGE_TTL_S == NOW + DAY
    row = change_row(s, proposal["id"])
    assert row["kind"] == "principal-access" and row["target"] == s.ids["carol"]
    assert orjson.loads(row["payload"]) == {"clearance": "critical"}
    assert carol_clearance(s) == int(Level.RESTRICTED)  # nothing applied
    (event,) = events(s, "change.proposed")
    assert event["actor"] == s.ids[FIRST_ADMIN]
    assert event["data"] == {
        "change_id": proposal["id"],
        "kind": "principal-access",
        "target": s.ids["carol"],
        "summary": "raise carol to critical",
    }


def test_a_long_summary_is_cut_to_500(s: Setup) -> None:
    proposal = changes.propose(s.as_(FIRST_ADMIN), "policy-set", "policy", {}, "x" * 900, now=NOW)
    assert len(change_row(s, proposal["id"])["summary"]) == 500


def test_pending_hands_the_change_only_to_a_second_admin_in_time(s: Setup) -> None:
    proposal = propose_raise(s)
    cid = proposal["id"]
    with s.d.engine.connect() as conn:
        row = changes.pending(conn, cid, s.ids["sec-2"], NOW + 1)
        assert row.id == cid
        assert changes.payload_of(row) == {"clearance": "critical"}
        with pytest.raises(Forbidden, match="rule two-person"):
            changes.pending(conn, cid, s.ids[FIRST_ADMIN], NOW + 1)
        with pytest.raises(Conflict, match="lapsed"):
            changes.pending(conn, cid, s.ids["sec-2"], NOW + CHANGE_TTL_S)
        changes.pending(conn, cid, s.ids["sec-2"], NOW + CHANGE_TTL_S - 1)
        with pytest.raises(NotFound, match="no change"):
            changes.pending(conn, "chg_0000000000000000", s.ids["sec-2"], NOW)
    changes.deny(s.as_("sec-2"), cid, now=NOW + 2)
    with s.d.engine.connect() as conn, pytest.raises(Conflict, match="is denied"):
        changes.pending(conn, cid, s.ids["sec-2"], NOW + 3)


def test_applying_marks_the_change_approved_in_the_same_transaction(s: Setup) -> None:
    cid = propose_raise(s)["id"]
    second = s.as_("sec-2", origin={"via": "test", "change_id": cid})
    applied = second.update_principal("carol", now=NOW + 60, clearance=Level.CRITICAL)
    assert applied == {"clearance": ["restricted", "critical"]}
    assert carol_clearance(s) == int(Level.CRITICAL)
    row = change_row(s, cid)
    assert row["status"] == "approved"
    assert row["decided_by"] == s.ids["sec-2"] and row["decided_at"] == NOW + 60
    event = events(s, "principal.updated")[-1]
    assert event["actor"] == s.ids["sec-2"] and event["principal_id"] == s.ids["carol"]
    assert event["data"]["origin"]["change_id"] == cid
    with s.d.engine.connect() as conn:
        assert changes.list_changes(conn, NOW + 61) == []
        (listed,) = changes.list_changes(conn, NOW + 61, all_=True)
    assert listed["status"] == "approved" and listed["decided_by"] == s.ids["sec-2"]


@pytest.mark.parametrize("how", ["denied", "approved-before"])
def test_a_change_no_longer_pending_rolls_the_application_back(s: Setup, how: str) -> None:
    cid = propose_raise(s)["id"]
    if how == "denied":
        changes.deny(s.as_("sec-2"), cid, now=NOW + 10)
    else:
        # applied once already (another transaction, another instant): not again
        s.as_("sec-2", origin={"change_id": cid}).update_principal(
            "carol", now=NOW + 10, clearance=Level.CRITICAL
        )
        s.d.update_principal("carol", now=NOW + 11, clearance=Level.RESTRICTED)
    before_change = change_row(s, cid)
    applying = s.as_("sec-2", origin={"change_id": cid})
    with nothing_written(s, Conflict, "no longer pending"):
        applying.update_principal("carol", now=NOW + 20, clearance=Level.CRITICAL)
    assert carol_clearance(s) == int(Level.RESTRICTED)
    assert change_row(s, cid) == before_change


def test_mark_applied_is_idempotent_within_one_transaction_only(s: Setup) -> None:
    cid = propose_raise(s)["id"]
    actor = s.ids["sec-2"]
    with write_transaction(s.d.engine) as conn:
        changes.mark_applied(conn, cid, actor=actor, at=NOW + 5)
        changes.mark_applied(conn, cid, actor=actor, at=NOW + 5)  # a second event, same write
        with pytest.raises(Conflict):
            changes.mark_applied(conn, cid, actor=s.ids[FIRST_ADMIN], at=NOW + 5)
    assert change_row(s, cid)["status"] == "approved"
    with write_transaction(s.d.engine) as conn, pytest.raises(Conflict):
        changes.mark_applied(conn, cid, actor=actor, at=NOW + 6)
    with write_transaction(s.d.engine) as conn, pytest.raises(Conflict, match="chg_"):
        changes.mark_applied(conn, "chg_0000000000000000", actor=actor, at=NOW)


def test_deny_a_change(s: Setup) -> None:
    cid = propose_raise(s)["id"]
    assert changes.deny(s.as_("sec-2"), cid, now=NOW + 5) == {"id": cid, "status": "denied"}
    row = change_row(s, cid)
    assert row["status"] == "denied"
    assert row["decided_by"] == s.ids["sec-2"] and row["decided_at"] == NOW + 5
    (event,) = events(s, "change.denied")
    assert event["actor"] == s.ids["sec-2"]
    assert event["data"] == {"change_id": cid, "kind": "principal-access", "target": s.ids["carol"]}
    assert carol_clearance(s) == int(Level.RESTRICTED)
    with nothing_written(s, Conflict, "is denied"):
        changes.deny(s.as_("sec-2"), cid, now=NOW + 6)
    with nothing_written(s, NotFound, "no change"):
        changes.deny(s.as_("sec-2"), "chg_0000000000000000", now=NOW + 6)


def test_list_changes_pending_lapsed_and_decided(s: Setup) -> None:
    old = propose_raise(s, now=NOW)["id"]
    new = propose_raise(s, now=NOW + 10)["id"]
    gone = propose_raise(s, now=NOW + 20)["id"]
    changes.deny(s.as_("sec-2"), gone, now=NOW + 30)
    with s.d.engine.connect() as conn:
        live = changes.list_changes(conn, NOW + 40)
        later = changes.list_changes(conn, NOW + CHANGE_TTL_S)
        every = changes.list_changes(conn, NOW + CHANGE_TTL_S, all_=True)
    assert [c["id"] for c in live] == [new, old]  # newest first; the denied one hidden
    assert [c["id"] for c in later] == [new]  # the old one lapsed
    assert {c["id"]: c["status"] for c in every} == {
        new: "pending",
        old: "lapsed",
        gone: "denied",
    }
    assert all("payload" not in c for c in every)


def test_policy_sets_are_versioned(s: Setup) -> None:
    with s.d.engine.connect() as conn:
        empty = changes.current_policy(conn)
    assert empty == {"version": 0, "text": "", "sha256": hashlib.sha256(b"").hexdigest()}
    text = "// first\n"
    v1 = changes.set_policy(s.as_("sec-2"), text, now=NOW, proposed_by=s.ids[FIRST_ADMIN])
    v2 = changes.set_policy(s.as_(FIRST_ADMIN), "// second\n", now=NOW + 1, proposed_by="x")
    assert (v1, v2) == (1, 2)
    with s.d.engine.connect() as conn:
        current = changes.current_policy(conn)
    assert current == {
        "version": 2,
        "text": "// second\n",
        "sha256": hashlib.sha256(b"// second\n").hexdigest(),
        "created_at": NOW + 1,
        "proposed_by": "x",
        "approved_by": s.ids[FIRST_ADMIN],
    }
    first, second = events(s, "policy.changed")
    assert first["actor"] == s.ids["sec-2"]
    assert first["data"] == {
        "version": 1,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "bytes": len(text),
        "proposed_by": s.ids[FIRST_ADMIN],
    }
    assert second["data"]["version"] == 2
    snap = load_snapshot(s.d.engine, Sealer.from_dir(s.settings.key_dir))
    assert (snap.policy_version, snap.policy_text) == (2, "// second\n")


def test_a_policy_set_applied_as_a_change_marks_it(s: Setup) -> None:
    cid = changes.propose(
        s.as_(FIRST_ADMIN), "policy-set", "policy", {"text": "// p\n"}, "p", now=NOW
    )["id"]
    changes.set_policy(
        s.as_("sec-2", origin={"change_id": cid}), "// p\n", now=NOW + 5, proposed_by="x"
    )
    assert change_row(s, cid)["status"] == "approved"
    denied = propose_raise(s)["id"]
    changes.deny(s.as_("sec-2"), denied, now=NOW + 6)
    with nothing_written(s, Conflict, "no longer pending"):
        changes.set_policy(
            s.as_("sec-2", origin={"change_id": denied}), "// q\n", now=NOW + 7, proposed_by="x"
        )


def test_close_unchanged(s: Setup) -> None:
    cid = propose_raise(s)["id"]
    result = changes.close_unchanged(s.as_("sec-2"), cid, now=NOW + 5)
    assert result == {"id": cid, "status": "approved"}
    row = change_row(s, cid)
    assert row["status"] == "approved" and row["decided_by"] == s.ids["sec-2"]
    (event,) = events(s, "admin.unchanged")
    assert event["actor"] == s.ids["sec-2"]
    assert event["data"] == {"change_id": cid, "note": "approved; nothing left to change"}
    assert carol_clearance(s) == int(Level.RESTRICTED)
    with nothing_written(s, Conflict, "no longer pending"):
        changes.close_unchanged(s.as_("sec-2"), cid, now=NOW + 6)
