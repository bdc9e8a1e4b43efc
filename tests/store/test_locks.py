"""Placing and lifting locks in the directory: one transaction each, with its change-feed row
(so every gateway swaps in a snapshot holding it) and its audit event — or nothing at all.

Targets are resolved from names to ids, a second active lock on one target is refused (409),
a TTL is bounded, a reason is required, and a global lockdown is lifted only by two different
admins (a lift request older than ``LIFT_REQUEST_TTL_S`` no longer counts).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from garrison.bootstrap import init, open_directory
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi, VendorStatus
from garrison.domain.locks import LockKind
from garrison.errors import BadRequest, Conflict, NotFound
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot
from garrison.store.locks import (
    LIFT_REQUEST_TTL_S,
    LOCK_REASON_MAX_CHARS,
    LOCK_TTL_MAX_S,
    list_locks,
)
from tests.store.conftest import BACKENDS
from tests.support import db, pg
from tests.support.store_copies import template_database, working_copy

NOW = 1_800_000_000.0
DAY = 86400.0
TABLES = (
    "locks",
    "change_feed",
    "audit_events",
    "incidents",
    "incident_notes",
    "orgs",
    "principals",
    "credentials",
    "models",
)


@dataclass
class Setup:
    settings: Settings
    d: Directory  # the first security admin ("sec-1")
    d2: Directory  # a second, different one ("sec-2")
    alice: str  # principal id
    acme: str  # vendor org id
    internal: str  # the internal org's id
    model: str  # model id of "assistant"
    key: str  # key id of alice's key

    def refs(self, kind: LockKind) -> tuple[str, str, str]:
        """(reference by name, the stored id, the readable name) of this kind's target."""
        return {
            LockKind.CREDENTIAL: (self.key, self.key, self.key),
            LockKind.PRINCIPAL: ("alice", self.alice, "alice"),
            LockKind.VENDOR: ("acme", self.acme, "acme"),
            LockKind.MODEL: ("assistant", self.model, "assistant"),
        }[kind]


@pytest.fixture(scope="module", params=BACKENDS)
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str], str | None]]:
    """One initialised, seeded directory per module and backend (``init`` is the slow
    part); each test works on a copy of it."""
    if request.param == "postgresql":
        pg.require()
    with template_database(request.param) as url:
        yield _seed(tmp_path_factory, url)


def _seed(
    tmp_path_factory: pytest.TempPathFactory, url: str | None
) -> tuple[Path, dict[str, str], str | None]:
    data = tmp_path_factory.mktemp("locks-template") / "data"
    initialized = init(data, database_url=url)
    d = open_directory(initialized.settings, actor="seed")
    ids = {
        "alice": d.create_principal(
            "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
        ),
        "acme": d.create_vendor(
            "acme",
            sponsor="alice",
            contract_start=NOW - DAY,
            contract_end=NOW + 30 * DAY,
            networks=["10.1.0.0/16"],
            seat_limit=3,
            ceiling_level=Level.INTERNAL,
            now=NOW,
        ),
    }
    d.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    ids["model"] = d.create_model(
        "assistant",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.INTERNAL,
        now=NOW,
    )
    ids["key"] = d.create_key("alice", now=NOW).key.key_id
    ids["internal"] = one(d, "SELECT id FROM orgs WHERE name = 'internal'")[0]
    d.engine.dispose()  # no connection open while tests copy the files (or the database)
    return data, ids, url


@pytest.fixture
def s(tmp_path: Path, template: tuple[Path, dict[str, str], str | None]) -> Iterator[Setup]:
    source, ids, url = template
    with working_copy(source, url, tmp_path / "data") as settings:
        yield from _setup(settings, ids)


def _setup(settings: Settings, ids: dict[str, str]) -> Iterator[Setup]:
    d = open_directory(settings, actor="sec-1")
    d2 = open_directory(settings, engine=d.engine, actor="sec-2")
    try:
        yield Setup(settings, d, d2, **ids)
    finally:
        d.engine.dispose()


# ── reading the database back ────────────────────────────────────────────────────────────
def _params(query: str, params: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """``?`` placeholders as named ones, for either backend."""
    names = iter(range(len(params)))
    return re.sub(r"\?", lambda _: f":p{next(names)}", query), {
        f"p{i}": v for i, v in enumerate(params)
    }


def one(d: Directory, query: str, *params: Any) -> tuple[Any, ...]:
    text, bound = _params(query, params)
    with d.engine.connect() as conn:
        row = conn.execute(sa.text(text), bound).first()
    assert row is not None, query
    return tuple(row)


def rows(d: Directory, query: str, *params: Any) -> list[dict[str, Any]]:
    text, bound = _params(query, params)
    return db.rows(d, text, **bound)


def counts(d: Directory) -> dict[str, int]:
    every = db.row_counts(d)
    return {t: every[t] for t in TABLES}


def lock_row(d: Directory, lock_id: str) -> dict[str, Any]:
    (row,) = rows(d, "SELECT * FROM locks WHERE id = ?", lock_id)
    return row


def events(d: Directory, *names: str) -> list[dict[str, Any]]:
    out = []
    for r in db.audit_rows(d):
        decoded = orjson.loads(r["record"])
        assert decoded["principal_id"] == r["principal_id"]
        assert decoded["credential_id"] == r["credential_id"]
        if not names or decoded["name"] in names:
            out.append(decoded)
    return out


def feed(d: Directory) -> list[dict[str, Any]]:
    return rows(d, "SELECT * FROM change_feed ORDER BY seq")


def snapshot_locks(s: Setup) -> Any:
    return load_snapshot(s.d.engine, Sealer.from_dir(s.settings.key_dir)).locks


@contextmanager
def refused(d: Directory, match: str, exc: type[Exception] = BadRequest) -> Iterator[None]:
    """The block raises ``exc`` matching ``match``; no row of any table changes."""
    before = counts(d)
    before_locks = rows(d, "SELECT * FROM locks ORDER BY id")
    with pytest.raises(exc, match=match):
        yield
    assert counts(d) == before
    assert rows(d, "SELECT * FROM locks ORDER BY id") == before_locks


# ── placing a lock ───────────────────────────────────────────────────────────────────────
ID_KINDS = (LockKind.CREDENTIAL, LockKind.PRINCIPAL, LockKind.VENDOR, LockKind.MODEL)


@pytest.mark.parametrize("kind", ID_KINDS, ids=str)
def test_lock_resolves_a_name_to_the_stored_id(s: Setup, kind: LockKind) -> None:
    ref, target, name = s.refs(kind)
    created = s.d.create_lock(kind, ref, reason="  ticket SEC-1  ", now=NOW)
    assert created["kind"] == kind.value
    assert created["target"] == target
    assert created["target_name"] == name
    assert created["reason"] == "ticket SEC-1"  # stripped
    assert created["created_by"] == "sec-1"
    assert created["created_at"] == NOW
    assert created["expires_at"] is None
    assert created["incident_id"] is None
    assert created["id"].startswith("lck_")
    row = lock_row(s.d, created["id"])
    assert {k: row[k] for k in created} == created
    assert row["lifted_at"] is None and row["lift_requested_by"] is None
    # The snapshot carries it, and it covers exactly its target.
    locks = snapshot_locks(s)
    field = {
        LockKind.CREDENTIAL: "credential_id",
        LockKind.PRINCIPAL: "principal_id",
        LockKind.VENDOR: "org_id",
        LockKind.MODEL: "model_id",
    }[kind]
    assert locks.covering(NOW, **{field: target}).id == created["id"]
    assert locks.covering(NOW, **{field: "someone-else"}) is None


@pytest.mark.parametrize("kind", [LockKind.PRINCIPAL, LockKind.VENDOR, LockKind.MODEL], ids=str)
def test_lock_by_id_is_the_same_target_as_by_name(s: Setup, kind: LockKind) -> None:
    _, target, name = s.refs(kind)
    created = s.d.create_lock(kind, target, reason="by id", now=NOW)
    assert (created["target"], created["target_name"]) == (target, name)


def test_vendor_lock_takes_the_internal_org_too(s: Setup) -> None:
    created = s.d.create_lock(LockKind.VENDOR, "internal", reason="insider", now=NOW)
    assert created["target"] == s.internal
    assert snapshot_locks(s).covering(NOW, org_id=s.internal).id == created["id"]


@pytest.mark.parametrize(
    ("ref", "stored"),
    [
        ("10.1.2.3/16", "10.1.0.0/16"),  # host bits dropped
        (" 192.0.2.7 ", "192.0.2.7/32"),  # a bare address is a host network
        ("2001:DB8::1/32", "2001:db8::/32"),
        ("::1", "::1/128"),
    ],
)
def test_network_lock_stores_the_normalised_cidr(s: Setup, ref: str, stored: str) -> None:
    created = s.d.create_lock(LockKind.NETWORK, ref, reason="bad range", now=NOW)
    assert created["target"] == stored == created["target_name"]
    inside = ipaddress.ip_network(stored)[0]
    assert snapshot_locks(s).covering(NOW, address=inside).id == created["id"]


def test_global_lock_targets_everything_whatever_the_reference(s: Setup) -> None:
    created = s.d.create_lock(LockKind.ALL, "anything at all", reason="breach", now=NOW)
    assert created["target"] == "*"
    assert created["target_name"] == "everything"
    assert snapshot_locks(s).covering(NOW).id == created["id"]


@pytest.mark.parametrize(
    ("kind", "ref", "match"),
    [
        (LockKind.CREDENTIAL, "0123456789abcdef", "key '0123456789abcdef' does not exist"),
        (LockKind.CREDENTIAL, "alice", "key 'alice' does not exist"),  # keys by id only
        (LockKind.PRINCIPAL, "mallory", "principal 'mallory' does not exist"),
        (LockKind.VENDOR, "globex", "org 'globex' does not exist"),
        (LockKind.MODEL, "gpt-9", "model 'gpt-9' does not exist"),
        (LockKind.MODEL, "alice", "model 'alice' does not exist"),  # names of another kind
        (LockKind.NETWORK, "10.1.0.0/33", "invalid network"),
        (LockKind.NETWORK, "not-a-network", "invalid network"),
        (LockKind.NETWORK, "", "invalid network"),
    ],
)
def test_unknown_target_is_refused_and_nothing_written(
    s: Setup, kind: LockKind, ref: str, match: str
) -> None:
    with refused(s.d, match):
        s.d.create_lock(kind, ref, reason="x", now=NOW)


# ── one active lock per target ───────────────────────────────────────────────────────────
@pytest.mark.parametrize("kind", ID_KINDS, ids=str)
def test_second_lock_on_the_same_target_is_a_conflict(s: Setup, kind: LockKind) -> None:
    ref, target, _ = s.refs(kind)
    first = s.d.create_lock(kind, ref, reason="first", now=NOW)
    # By name or by id, by the same admin or another: the same target.
    for d, other_ref in ((s.d, ref), (s.d2, target)):
        with refused(s.d, rf"already locked \({first['id']}\)", Conflict):
            d.create_lock(kind, other_ref, reason="second", now=NOW + 1)
    assert Conflict.status == 409


def test_network_duplicate_is_seen_through_another_spelling(s: Setup) -> None:
    first = s.d.create_lock(LockKind.NETWORK, "10.1.0.0/16", reason="first", now=NOW)
    with refused(s.d, first["id"], Conflict):
        s.d.create_lock(LockKind.NETWORK, "10.1.99.99/16", reason="again", now=NOW)
    # A different network (even an overlapping one) is another target.
    s.d.create_lock(LockKind.NETWORK, "10.1.0.0/24", reason="narrower", now=NOW)


def test_second_global_lockdown_is_a_conflict(s: Setup) -> None:
    first = s.d.create_lock(LockKind.ALL, "*", reason="first", now=NOW)
    with refused(s.d, first["id"], Conflict):
        s.d2.create_lock(LockKind.ALL, "*", reason="again", now=NOW)


def test_same_target_under_another_kind_is_no_conflict(s: Setup) -> None:
    """A principal lock and a vendor lock are different targets even for related objects."""
    s.d.create_lock(LockKind.PRINCIPAL, "alice", reason="a", now=NOW)
    s.d.create_lock(LockKind.VENDOR, "internal", reason="b", now=NOW)
    s.d.create_lock(LockKind.CREDENTIAL, s.key, reason="c", now=NOW)
    assert counts(s.d)["locks"] == 3


def test_target_can_be_locked_again_once_the_lock_expired(s: Setup) -> None:
    first = s.d.create_lock(LockKind.MODEL, "assistant", reason="short", now=NOW, ttl_s=60)
    with refused(s.d, first["id"], Conflict):
        s.d.create_lock(LockKind.MODEL, "assistant", reason="again", now=NOW + 59.9)
    second = s.d.create_lock(LockKind.MODEL, "assistant", reason="again", now=NOW + 60)
    assert second["id"] != first["id"]


def test_target_can_be_locked_again_once_lifted(s: Setup) -> None:
    first = s.d.create_lock(LockKind.PRINCIPAL, "alice", reason="one", now=NOW)
    s.d.lift_lock(first["id"], reason="cleared", now=NOW + 10)
    s.d.create_lock(LockKind.PRINCIPAL, "alice", reason="two", now=NOW + 20)


# ── TTL and reason ───────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("ttl", [0.0, -1.0, LOCK_TTL_MAX_S + 1, math.inf, math.nan])
def test_ttl_out_of_bounds_is_refused(s: Setup, ttl: float) -> None:
    with refused(s.d, "TTL"):
        s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW, ttl_s=ttl)


@pytest.mark.parametrize("ttl", [0.001, 30.0, float(LOCK_TTL_MAX_S)])
def test_ttl_within_bounds_sets_the_expiry(s: Setup, ttl: float) -> None:
    created = s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW, ttl_s=ttl)
    assert created["expires_at"] == NOW + ttl
    assert lock_row(s.d, created["id"])["expires_at"] == NOW + ttl
    locks = snapshot_locks(s)
    assert locks.covering(NOW + ttl - ttl / 2, model_id=s.model) is not None
    assert locks.covering(NOW + ttl, model_id=s.model) is None


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_reason_is_required(s: Setup, reason: str) -> None:
    with refused(s.d, "reason is required"):
        s.d.create_lock(LockKind.MODEL, "assistant", reason=reason, now=NOW)


def test_reason_length_is_bounded(s: Setup) -> None:
    with refused(s.d, "longer than"):
        s.d.create_lock(
            LockKind.MODEL, "assistant", reason="x" * (LOCK_REASON_MAX_CHARS + 1), now=NOW
        )
    longest = "y" * LOCK_REASON_MAX_CHARS
    created = s.d.create_lock(LockKind.MODEL, "assistant", reason=longest, now=NOW)
    assert lock_row(s.d, created["id"])["reason"] == longest


def test_lift_reason_is_required_and_bounded(s: Setup) -> None:
    created = s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW)
    with refused(s.d, "reason is required"):
        s.d.lift_lock(created["id"], reason=" ", now=NOW)
    with refused(s.d, "longer than"):
        s.d.lift_lock(created["id"], reason="z" * (LOCK_REASON_MAX_CHARS + 1), now=NOW)
    assert lock_row(s.d, created["id"])["lifted_at"] is None


# ── events and the change feed ───────────────────────────────────────────────────────────
@pytest.mark.parametrize("kind", [*ID_KINDS, LockKind.NETWORK, LockKind.ALL], ids=str)
def test_creation_writes_one_event_and_one_change_feed_row(s: Setup, kind: LockKind) -> None:
    ref = {LockKind.NETWORK: "10.9.0.0/16", LockKind.ALL: "*"}.get(kind) or s.refs(kind)[0]
    before = counts(s.d)
    feed_before = feed(s.d)
    created = s.d.create_lock(kind, ref, reason="why", now=NOW + 5, ttl_s=100)
    after = counts(s.d)
    assert after["locks"] == before["locks"] + 1
    assert after["change_feed"] == before["change_feed"] + 1
    assert after["audit_events"] == before["audit_events"] + 1
    (row,) = feed(s.d)[len(feed_before) :]
    assert (row["entity"], row["entity_id"], row["op"], row["at"]) == (
        "lock",
        created["id"],
        "create",
        NOW + 5,
    )
    event = events(s.d)[-1]
    assert event["name"] == "lock.created"
    assert event["actor"] == "sec-1"
    assert event["at"] == NOW + 5
    assert event["data"] == {
        "lock_id": created["id"],
        "kind": kind.value,
        "target": created["target"],
        "target_name": created["target_name"],
        "reason": "why",
        "expires_at": NOW + 105,
        "incident_id": None,
    }
    assert event["principal_id"] == (created["target"] if kind is LockKind.PRINCIPAL else None)
    assert event["credential_id"] == (created["target"] if kind is LockKind.CREDENTIAL else None)


def test_snapshot_version_moves_with_each_lock_write(s: Setup) -> None:
    sealer = Sealer.from_dir(s.settings.key_dir)
    v0 = load_snapshot(s.d.engine, sealer).version
    created = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)
    v1 = load_snapshot(s.d.engine, sealer).version
    s.d.lift_lock(created["id"], reason="first", now=NOW + 1)
    v2 = load_snapshot(s.d.engine, sealer).version
    s.d2.lift_lock(created["id"], reason="second", now=NOW + 2)
    v3 = load_snapshot(s.d.engine, sealer).version
    assert v0 < v1 < v2 < v3


# ── lifting ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("kind", [*ID_KINDS, LockKind.NETWORK], ids=str)
def test_ordinary_lock_is_lifted_by_one_admin_at_once(s: Setup, kind: LockKind) -> None:
    ref = "10.9.0.0/16" if kind is LockKind.NETWORK else s.refs(kind)[0]
    created = s.d.create_lock(kind, ref, reason="why", now=NOW)
    before = counts(s.d)
    # Even by the admin who placed it.
    result = s.d.lift_lock(created["id"], reason=" all clear ", now=NOW + 10)
    assert result == {"id": created["id"], "status": "lifted"}
    row = lock_row(s.d, created["id"])
    assert (row["lifted_at"], row["lifted_by"], row["lift_reason"]) == (
        NOW + 10,
        "sec-1",
        "all clear",
    )
    after = counts(s.d)
    assert after["change_feed"] == before["change_feed"] + 1
    assert after["audit_events"] == before["audit_events"] + 1
    assert feed(s.d)[-1]["op"] == "lift"
    event = events(s.d)[-1]
    assert event["name"] == "lock.lifted"
    assert event["actor"] == "sec-1"
    assert event["data"] == {
        "lock_id": created["id"],
        "kind": kind.value,
        "target": created["target"],
        "reason": "all clear",
    }
    assert event["principal_id"] == (created["target"] if kind is LockKind.PRINCIPAL else None)
    assert event["credential_id"] == (created["target"] if kind is LockKind.CREDENTIAL else None)
    # A lifted lock is not loaded at all.
    assert not snapshot_locks(s)


def test_lifting_twice_is_a_conflict(s: Setup) -> None:
    created = s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW)
    s.d.lift_lock(created["id"], reason="done", now=NOW + 1)
    with refused(s.d, "already lifted", Conflict):
        s.d2.lift_lock(created["id"], reason="again", now=NOW + 2)


def test_lifting_an_unknown_lock_is_not_found(s: Setup) -> None:
    with refused(s.d, "no lock", NotFound):
        s.d.lift_lock("lck_0000000000000000", reason="x", now=NOW)


def test_an_expired_lock_can_still_be_lifted(s: Setup) -> None:
    created = s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW, ttl_s=10)
    assert s.d.lift_lock(created["id"], reason="tidy", now=NOW + 100)["status"] == "lifted"


# ── two-person lift of a global lockdown ─────────────────────────────────────────────────
def test_global_lockdown_needs_two_different_admins(s: Setup) -> None:
    created = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)
    lock_id = created["id"]

    before = counts(s.d)
    first = s.d.lift_lock(lock_id, reason="contained", now=NOW + 60)
    assert first == {"id": lock_id, "status": "pending", "requested_by": "sec-1"}
    row = lock_row(s.d, lock_id)
    assert row["lifted_at"] is None
    assert (row["lift_requested_by"], row["lift_requested_at"]) == ("sec-1", NOW + 60)
    assert counts(s.d)["change_feed"] == before["change_feed"] + 1
    requested = events(s.d)[-1]
    assert requested["name"] == "lock.lift_requested"
    assert requested["actor"] == "sec-1"
    assert requested["data"] == {
        "lock_id": lock_id,
        "kind": "all",
        "target": "*",
        "reason": "contained",
    }
    # Still in force while pending.
    assert snapshot_locks(s).covering(NOW + 61).id == lock_id
    assert [x["state"] for x in listed(s, NOW + 61)] == ["lift-pending"]

    # The same admin again: refused, nothing written.
    with refused(s.d, "two-person", Conflict):
        s.d.lift_lock(lock_id, reason="please", now=NOW + 120)

    # A second, different admin lifts it.
    second = s.d2.lift_lock(lock_id, reason="confirmed", now=NOW + 180)
    assert second == {"id": lock_id, "status": "lifted", "requested_by": "sec-1"}
    row = lock_row(s.d, lock_id)
    assert (row["lifted_at"], row["lifted_by"]) == (NOW + 180, "sec-2")
    lifted = events(s.d)[-1]
    assert lifted["name"] == "lock.lifted"
    assert lifted["actor"] == "sec-2"
    assert lifted["data"]["requested_by"] == "sec-1"
    assert lifted["data"]["reason"] == "confirmed"
    assert not snapshot_locks(s)
    with refused(s.d, "already lifted", Conflict):
        s.d.lift_lock(lock_id, reason="x", now=NOW + 200)


def test_same_admin_conflict_names_the_two_person_rule(s: Setup) -> None:
    lock_id = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)["id"]
    s.d.lift_lock(lock_id, reason="one", now=NOW)
    with pytest.raises(Conflict) as info:
        s.d.lift_lock(lock_id, reason="two", now=NOW + 1)
    assert info.value.status == 409
    assert str(info.value).startswith("rule two-person:")


def test_lift_request_counts_up_to_its_ttl_inclusive(s: Setup) -> None:
    lock_id = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)["id"]
    s.d.lift_lock(lock_id, reason="one", now=NOW + 10)
    result = s.d2.lift_lock(lock_id, reason="two", now=NOW + 10 + LIFT_REQUEST_TTL_S)
    assert result["status"] == "lifted"


def test_stale_lift_request_does_not_count(s: Setup) -> None:
    lock_id = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)["id"]
    s.d.lift_lock(lock_id, reason="one", now=NOW + 10)
    late = NOW + 10 + LIFT_REQUEST_TTL_S + 1
    # The second admin comes too late: their call is a new request, not a confirmation.
    result = s.d2.lift_lock(lock_id, reason="two", now=late)
    assert result == {"id": lock_id, "status": "pending", "requested_by": "sec-2"}
    row = lock_row(s.d, lock_id)
    assert row["lifted_at"] is None
    assert (row["lift_requested_by"], row["lift_requested_at"]) == ("sec-2", late)
    # The same second admin cannot now confirm their own request...
    with refused(s.d, "two-person", Conflict):
        s.d2.lift_lock(lock_id, reason="three", now=late + 1)
    # ...the first admin can.
    done = s.d.lift_lock(lock_id, reason="three", now=late + 2)
    assert done == {"id": lock_id, "status": "lifted", "requested_by": "sec-2"}
    names = [e["name"] for e in events(s.d, "lock.lift_requested", "lock.lifted")]
    assert names == ["lock.lift_requested", "lock.lift_requested", "lock.lifted"]


def test_same_admin_may_renew_a_stale_request(s: Setup) -> None:
    lock_id = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)["id"]
    s.d.lift_lock(lock_id, reason="one", now=NOW)
    renewed = s.d.lift_lock(lock_id, reason="again", now=NOW + LIFT_REQUEST_TTL_S + 1)
    assert renewed["status"] == "pending"
    assert lock_row(s.d, lock_id)["lift_requested_at"] == NOW + LIFT_REQUEST_TTL_S + 1


def test_ordinary_locks_need_no_second_admin(s: Setup) -> None:
    """Only the global lockdown is two-person: a model lock is lifted by its own placer."""
    lock_id = s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW)["id"]
    assert s.d.lift_lock(lock_id, reason="y", now=NOW)["status"] == "lifted"
    assert events(s.d, "lock.lift_requested") == []


# ── incidents ────────────────────────────────────────────────────────────────────────────
def test_lock_linked_to_an_incident_leaves_notes_on_it(s: Setup) -> None:
    incident = s.d.open_incident("key leak", now=NOW)
    notes_before = rows(s.d, "SELECT * FROM incident_notes WHERE incident_id = ?", incident)
    created = s.d.create_lock(
        LockKind.PRINCIPAL, "alice", reason="contain", now=NOW + 1, incident=incident
    )
    assert created["incident_id"] == incident
    assert lock_row(s.d, created["id"])["incident_id"] == incident
    assert events(s.d)[-1]["data"]["incident_id"] == incident
    s.d.lift_lock(created["id"], reason="rotated", now=NOW + 2)
    notes = rows(s.d, "SELECT * FROM incident_notes WHERE incident_id = ? ORDER BY seq", incident)
    new = notes[len(notes_before) :]
    assert [(n["kind"], n["author"], n["at"]) for n in new] == [
        ("action", "sec-1", NOW + 1),
        ("action", "sec-1", NOW + 2),
    ]
    assert created["id"] in new[0]["text"] and "alice" in new[0]["text"]
    assert "contain" in new[0]["text"]
    assert created["id"] in new[1]["text"] and "rotated" in new[1]["text"]


def test_unknown_incident_is_refused_and_nothing_written(s: Setup) -> None:
    with refused(s.d, "incident 'inc_nope' does not exist"):
        s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW, incident="inc_nope")


# ── listing ──────────────────────────────────────────────────────────────────────────────
def listed(s: Setup, now: float, *, include_ended: bool = False) -> list[dict[str, Any]]:
    with s.d.engine.connect() as conn:
        return list_locks(conn, now, include_ended=include_ended)


def test_list_shows_locks_in_force_and_on_request_the_ended_ones(s: Setup) -> None:
    lifted = s.d.create_lock(LockKind.PRINCIPAL, "alice", reason="a", now=NOW)["id"]
    s.d.lift_lock(lifted, reason="done", now=NOW + 1)
    expired = s.d.create_lock(LockKind.MODEL, "assistant", reason="b", now=NOW + 2, ttl_s=5)["id"]
    active = s.d.create_lock(LockKind.VENDOR, "acme", reason="c", now=NOW + 3)["id"]
    pending = s.d.create_lock(LockKind.ALL, "*", reason="d", now=NOW + 4)["id"]
    s.d.lift_lock(pending, reason="one", now=NOW + 5)

    now = NOW + 100
    assert {x["id"]: x["state"] for x in listed(s, now)} == {
        active: "active",
        pending: "lift-pending",
    }
    everything = listed(s, now, include_ended=True)
    assert [x["id"] for x in everything] == [pending, active, expired, lifted]  # newest first
    assert {x["id"]: x["state"] for x in everything} == {
        active: "active",
        pending: "lift-pending",
        expired: "expired",
        lifted: "lifted",
    }
    by_id = {x["id"]: x for x in everything}
    assert by_id[lifted]["lifted_by"] == "sec-1"
    assert by_id[lifted]["lift_reason"] == "done"
    assert by_id[pending]["lift_requested_by"] == "sec-1"
    assert by_id[active]["target_name"] == "acme"
    # Before the TTL lock ended it was in force.
    assert expired in {x["id"] for x in listed(s, NOW + 6)}


def test_list_does_not_call_a_stale_lift_request_pending(s: Setup) -> None:
    """A lift request older than LIFT_REQUEST_TTL_S no longer counts (lift_lock treats the
    next call as a new request), so the listing must not show the lockdown as pending."""
    lock_id = s.d.create_lock(LockKind.ALL, "*", reason="breach", now=NOW)["id"]
    s.d.lift_lock(lock_id, reason="one", now=NOW)
    assert [x["state"] for x in listed(s, NOW + LIFT_REQUEST_TTL_S)] == ["lift-pending"]
    later = NOW + LIFT_REQUEST_TTL_S + 1
    assert [x["state"] for x in listed(s, later)] == ["active"]


def test_snapshot_keeps_unlifted_locks_only(s: Setup) -> None:
    lifted = s.d.create_lock(LockKind.PRINCIPAL, "alice", reason="a", now=NOW)["id"]
    s.d.lift_lock(lifted, reason="done", now=NOW + 1)
    expired = s.d.create_lock(LockKind.MODEL, "assistant", reason="b", now=NOW, ttl_s=5)["id"]
    kept = s.d.create_lock(LockKind.NETWORK, "10.0.0.0/8", reason="c", now=NOW)["id"]
    locks = snapshot_locks(s)
    assert len(locks) == 2  # the expired one is still loaded; it just stops covering
    assert locks.covering(NOW + 1, principal_id=s.alice) is None
    assert locks.covering(NOW + 1, model_id=s.model).id == expired
    assert locks.covering(NOW + 5, model_id=s.model) is None
    net = locks.covering(NOW + 5, address=ipaddress.ip_address("10.2.3.4"))
    assert net.id == kept
    assert net.network == ipaddress.ip_network("10.0.0.0/8")


def test_locks_table_matches_what_create_returned(s: Setup) -> None:
    """The row is the returned dict plus the lift columns (all empty)."""
    created = s.d.create_lock(LockKind.MODEL, "assistant", reason="x", now=NOW, ttl_s=9)
    with s.d.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM locks")).mappings().one()
    assert {k: row[k] for k in created} == created
    assert all(
        row[k] is None
        for k in ("lifted_at", "lifted_by", "lift_reason", "lift_requested_by", "lift_requested_at")
    )
