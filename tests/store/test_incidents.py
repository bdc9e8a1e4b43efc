"""Incidents in the store: opening one (title bounds, a start that is not in the future,
subjects that exist, by name or id), updating it (the transition table, notes, bounds),
each one transaction with its audit event — or nothing written at all — and the timeline of
the subjects' events since the start (clock passed in).
An incident's timeline holds the events whose actor is a subject principal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind, VendorStatus
from garrison.domain.incidents import (
    INCIDENT_TRANSITIONS,
    IllegalIncidentTransition,
    IncidentStatus,
)
from garrison.domain.locks import LockKind
from garrison.errors import BadRequest, NotFound
from garrison.store import Directory
from garrison.store.incidents import (
    INCIDENT_NOTE_MAX_CHARS,
    INCIDENT_TITLE_MAX_CHARS,
    incident_report,
    list_incidents,
    timeline,
)
from tests.support import db

NOW = 1_800_000_000.0
DAY = 86400.0
S = IncidentStatus
TABLES = ("incidents", "incident_notes", "audit_events", "change_feed", "locks")


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    """``alice`` (internal); the vendor ``acme`` with ``vic`` and ``val``; one key each."""
    dr = open_directory(initialized.settings, actor="test")
    dr.create_principal(
        "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    dr.create_vendor(
        "acme",
        sponsor="alice",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.1.0.0/16"],
        seat_limit=5,
        ceiling_level=Level.INTERNAL,
        now=NOW,
    )
    dr.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    for name in ("vic", "val"):
        dr.create_principal(
            name, org="acme", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
        )
    for name in ("alice", "vic", "val"):
        dr.create_key(name, now=NOW)
    try:
        yield dr
    finally:
        dr.engine.dispose()


# ── helpers ────────────────────────────────────────────────────────────────────────────────
def rows(d: Directory, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of ``sql`` (``?`` placeholders) as dictionaries, on either backend."""
    names = iter(range(len(args)))
    return db.rows(
        d,
        re.sub(r"\?", lambda _: f":p{next(names)}", sql),
        **{f"p{i}": v for i, v in enumerate(args)},
    )


def counts(d: Directory) -> dict[str, int]:
    every = db.row_counts(d)
    return {t: every[t] for t in TABLES}


def snapshot(d: Directory) -> list[list[dict[str, Any]]]:
    """Every row of the tables an incident write touches (the audit log with its outbox)."""
    out = [db.audit_rows(d)]
    for t in TABLES:
        if t != "audit_events":
            found = rows(d, f"SELECT * FROM {t}")  # noqa: S608
            out.append(sorted(found, key=lambda r: sorted(map(repr, r.items()))))
    return out


def events(d: Directory, *names: str) -> list[dict[str, Any]]:
    out = []
    for record in db.recorded(d):
        decoded = orjson.loads(record)
        if not names or decoded["name"] in names:
            out.append(decoded)
    return out


def incident(d: Directory, incident_id: str) -> dict[str, Any]:
    found = rows(d, "SELECT * FROM incidents WHERE id = ?", incident_id)
    assert len(found) == 1, incident_id
    return found[0]


def notes(d: Directory, incident_id: str) -> list[tuple[str, str]]:
    return [
        (r["kind"], r["text"])
        for r in rows(
            d,
            "SELECT kind, text FROM incident_notes WHERE incident_id = ? ORDER BY seq",
            incident_id,
        )
    ]


def ids(d: Directory, table: str, name: str) -> str:
    return str(rows(d, f"SELECT id FROM {table} WHERE name = ?", name)[0]["id"])  # noqa: S608


def key_of(d: Directory, principal: str) -> str:
    pid = ids(d, "principals", principal)
    return str(rows(d, "SELECT id FROM credentials WHERE principal_id = ?", pid)[0]["id"])


@contextmanager
def refused(d: Directory, match: str, exc: type[Exception] = BadRequest) -> Iterator[None]:
    """The block raises ``exc`` matching ``match``; no row of any table changes."""
    before = snapshot(d)
    with pytest.raises(exc, match=match):
        yield
    assert snapshot(d) == before


def walk(d: Directory, incident_id: str, *path: IncidentStatus, at: float = NOW) -> None:
    for i, status in enumerate(path):
        d.update_incident(incident_id, now=at + i, status=status)


# ── opening ────────────────────────────────────────────────────────────────────────────────
def test_open_writes_the_incident_its_first_note_and_one_audit_event(d: Directory) -> None:
    before = counts(d)
    inc = d.open_incident("  Leaked key at acme  ", now=NOW + 5, since=NOW - 60, vendors=["acme"])
    after = counts(d)
    assert after == {
        **before,
        "incidents": before["incidents"] + 1,
        "incident_notes": before["incident_notes"] + 1,
        "audit_events": before["audit_events"] + 1,
        "change_feed": before["change_feed"],  # an incident changes nothing enforced
    }
    assert inc.startswith("inc_")
    row = incident(d, inc)
    assert row["title"] == "Leaked key at acme"  # stripped
    assert row["status"] == "open"
    assert row["opened_by"] == "test"
    assert row["opened_at"] == NOW + 5
    assert row["since"] == NOW - 60
    assert row["updated_at"] == NOW + 5
    assert orjson.loads(row["subjects"]) == {
        "vendor": [ids(d, "orgs", "acme")],
        "principal": [],
        "credential": [],
    }
    assert notes(d, inc) == [("status", "opened")]
    (event,) = events(d, "incident.opened")
    assert event["actor"] == "test"
    assert event["at"] == NOW + 5
    assert event["data"] == {
        "incident_id": inc,
        "title": "Leaked key at acme",
        "since": NOW - 60,
        "vendor": [ids(d, "orgs", "acme")],
        "principal": [],
        "credential": [],
    }
    assert events(d)[-1] == event  # the last event written


def test_since_defaults_to_now(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW)
    assert incident(d, inc)["since"] == NOW


def test_since_equal_to_now_is_accepted(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW, since=NOW)
    assert incident(d, inc)["since"] == NOW


@pytest.mark.parametrize("ahead", [0.001, 1.0, DAY])
def test_since_in_the_future_is_refused_and_nothing_is_written(d: Directory, ahead: float) -> None:
    with refused(d, r"since\) is in the future"):
        d.open_incident("t", now=NOW, since=NOW + ahead, vendors=["acme"])


def test_title_at_the_limit_is_accepted(d: Directory) -> None:
    title = "x" * INCIDENT_TITLE_MAX_CHARS
    inc = d.open_incident(title, now=NOW)
    assert incident(d, inc)["title"] == title


def test_title_bound_counts_after_stripping(d: Directory) -> None:
    title = "y" * INCIDENT_TITLE_MAX_CHARS
    inc = d.open_incident(f"   {title}\n", now=NOW)
    assert incident(d, inc)["title"] == title


@pytest.mark.parametrize(
    ("title", "match"),
    [
        ("", "needs a title"),
        ("   ", "needs a title"),
        ("\n\t", "needs a title"),
        ("x" * (INCIDENT_TITLE_MAX_CHARS + 1), f"longer than {INCIDENT_TITLE_MAX_CHARS}"),
    ],
    ids=["empty", "spaces", "whitespace", "too-long"],
)
def test_bad_titles_are_refused_and_nothing_is_written(
    d: Directory, title: str, match: str
) -> None:
    with refused(d, match):
        d.open_incident(title, now=NOW, vendors=["acme"])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"vendors": ["no-such-vendor"]}, "vendor 'no-such-vendor' does not exist"),
        ({"principals": ["nobody"]}, "principal 'nobody' does not exist"),
        ({"credentials": ["gk_0000000000000000"]}, "key 'gk_0000000000000000' does not exist"),
        # One good subject does not carry a bad one.
        ({"vendors": ["acme"], "principals": ["vic", "ghost"]}, "principal 'ghost'"),
        # A principal's name is not a vendor, nor a vendor's name a principal.
        ({"vendors": ["vic"]}, "vendor 'vic' does not exist"),
        ({"principals": ["acme"]}, "principal 'acme' does not exist"),
    ],
    ids=["vendor", "principal", "credential", "mixed", "principal-as-vendor", "vendor-as-person"],
)
def test_unknown_subjects_are_refused_and_nothing_is_written(
    d: Directory, kw: dict[str, Any], match: str
) -> None:
    with refused(d, match):
        d.open_incident("t", now=NOW, **kw)


def test_a_credential_is_named_by_its_id_only(d: Directory) -> None:
    with refused(d, "key 'vic' does not exist"):
        d.open_incident("t", now=NOW, credentials=["vic"])


def test_subjects_resolve_by_name_or_id_and_are_deduplicated(d: Directory) -> None:
    acme, vic, key = ids(d, "orgs", "acme"), ids(d, "principals", "vic"), key_of(d, "val")
    inc = d.open_incident(
        "t",
        now=NOW,
        vendors=["acme", acme],
        principals=["vic", vic, "alice"],
        credentials=[key, key],
    )
    assert orjson.loads(incident(d, inc)["subjects"]) == {
        "vendor": [acme],
        "principal": sorted([vic, ids(d, "principals", "alice")]),
        "credential": [key],
    }


def test_an_incident_without_subjects_may_be_opened(d: Directory) -> None:
    inc = d.open_incident("something odd", now=NOW)
    assert orjson.loads(incident(d, inc)["subjects"]) == {
        "vendor": [],
        "principal": [],
        "credential": [],
    }
    db.integrate(d)
    with d.engine.connect() as conn:
        assert timeline(conn, inc) == []


def test_list_incidents_newest_first(d: Directory) -> None:
    first = d.open_incident("first", now=NOW)
    second = d.open_incident("second", now=NOW + 10, since=NOW - 5)
    walk(d, first, S.CONTAINED, at=NOW + 20)
    db.integrate(d)
    with d.engine.connect() as conn:
        listed = list_incidents(conn)
    assert [i["id"] for i in listed] == [second, first]
    assert listed[0] == {
        "id": second,
        "title": "second",
        "status": "open",
        "opened_by": "test",
        "opened_by_name": None,  # the actor "test" is not a principal
        "opened_at": NOW + 10,
        "since": NOW - 5,
        "updated_at": NOW + 10,
    }
    assert listed[1]["status"] == "contained"
    assert listed[1]["updated_at"] == NOW + 20


# ── updating ───────────────────────────────────────────────────────────────────────────────
def test_status_change_writes_a_status_note_and_one_audit_event(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW)
    before = counts(d)
    out = d.update_incident(inc, now=NOW + 30, status=S.CONTAINED)
    assert out == {"incident_id": inc, "from": "open", "to": "contained"}
    assert counts(d) == {
        **before,
        "incident_notes": before["incident_notes"] + 1,
        "audit_events": before["audit_events"] + 1,
        "change_feed": before["change_feed"],  # an incident changes nothing enforced
    }
    row = incident(d, inc)
    assert row["status"] == "contained"
    assert row["updated_at"] == NOW + 30
    assert row["opened_at"] == NOW
    assert notes(d, inc) == [("status", "opened"), ("status", "open → contained")]
    (event,) = events(d, "incident.updated")
    assert event["at"] == NOW + 30
    assert event["actor"] == "test"
    assert event["data"] == {"incident_id": inc, "from": "open", "to": "contained"}


def test_a_note_alone_changes_no_status(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW)
    out = d.update_incident(inc, now=NOW + 1, note="  saw calls from 10.1.2.3  ")
    assert out == {"incident_id": inc, "note": "saw calls from 10.1.2.3"}
    row = incident(d, inc)
    assert row["status"] == "open"
    assert row["updated_at"] == NOW  # only a status change moves it
    assert notes(d, inc) == [("status", "opened"), ("note", "saw calls from 10.1.2.3")]
    (event,) = events(d, "incident.updated")
    assert event["data"] == {"incident_id": inc, "note": "saw calls from 10.1.2.3"}


def test_status_and_note_together_are_one_event_and_two_notes(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW)
    before = counts(d)
    out = d.update_incident(inc, now=NOW + 2, status=S.RESOLVED, note="keys rotated")
    assert out == {"incident_id": inc, "from": "open", "to": "resolved", "note": "keys rotated"}
    assert counts(d)["audit_events"] == before["audit_events"] + 1
    assert counts(d)["incident_notes"] == before["incident_notes"] + 2
    assert notes(d, inc)[1:] == [("status", "open → resolved"), ("note", "keys rotated")]


def test_note_at_the_limit_is_accepted(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW)
    text = "n" * INCIDENT_NOTE_MAX_CHARS
    d.update_incident(inc, now=NOW, note=text)
    assert notes(d, inc)[-1] == ("note", text)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"note": ""}, "the note is empty"),
        ({"note": "  \n "}, "the note is empty"),
        (
            {"note": "n" * (INCIDENT_NOTE_MAX_CHARS + 1)},
            f"longer than {INCIDENT_NOTE_MAX_CHARS}",
        ),
        ({}, "nothing to change"),
        # A bad note sinks a good status change with it.
        ({"status": S.CONTAINED, "note": " "}, "the note is empty"),
    ],
    ids=["empty-note", "blank-note", "long-note", "nothing", "status-with-bad-note"],
)
def test_bad_updates_are_refused_and_nothing_is_written(
    d: Directory, kw: dict[str, Any], match: str
) -> None:
    inc = d.open_incident("t", now=NOW)
    with refused(d, match):
        d.update_incident(inc, now=NOW + 1, **kw)
    assert incident(d, inc)["status"] == "open"


def test_unknown_incident_is_not_found_and_nothing_is_written(d: Directory) -> None:
    d.open_incident("t", now=NOW)
    with refused(d, "no incident 'inc_nope'", NotFound):
        d.update_incident("inc_nope", now=NOW, note="hello")
    with refused(d, "no incident 'inc_nope'", NotFound):
        d.update_incident("inc_nope", now=NOW, status=S.CONTAINED)


# Every (from, to) pair through the store: reach ``from`` by a legal path, then try ``to``.
PATH_TO = {
    S.OPEN: (),
    S.CONTAINED: (S.CONTAINED,),
    S.RESOLVED: (S.RESOLVED,),
    S.CLOSED: (S.RESOLVED, S.CLOSED),
}
PAIRS = [(a, b) for a in IncidentStatus for b in IncidentStatus]


@pytest.mark.parametrize(
    ("current", "target"), PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS]
)
def test_every_transition_through_the_store_follows_the_table(
    d: Directory, current: IncidentStatus, target: IncidentStatus
) -> None:
    inc = d.open_incident("t", now=NOW)
    walk(d, inc, *PATH_TO[current])
    assert incident(d, inc)["status"] == current.value
    if target in INCIDENT_TRANSITIONS[current]:
        out = d.update_incident(inc, now=NOW + 100, status=target, note="moving on")
        assert (out["from"], out["to"]) == (current.value, target.value)
        assert incident(d, inc)["status"] == target.value
        assert incident(d, inc)["updated_at"] == NOW + 100
        assert notes(d, inc)[-2:] == [
            ("status", f"{current.value} → {target.value}"),
            ("note", "moving on"),
        ]
    else:
        with refused(d, "rule incident-lifecycle", IllegalIncidentTransition):
            # The note would be valid: the refused status change takes it down too.
            d.update_incident(inc, now=NOW + 100, status=target, note="moving on")
        assert incident(d, inc)["status"] == current.value


def test_a_full_lifecycle_with_a_reopening_leaves_its_trail(d: Directory) -> None:
    inc = d.open_incident("t", now=NOW)
    walk(d, inc, S.CONTAINED, S.OPEN, S.RESOLVED, S.OPEN, S.CONTAINED, S.RESOLVED, S.CLOSED)
    assert incident(d, inc)["status"] == "closed"
    assert [t for k, t in notes(d, inc) if k == "status"] == [
        "opened",
        "open → contained",
        "contained → open",
        "open → resolved",
        "resolved → open",
        "open → contained",
        "contained → resolved",
        "resolved → closed",
    ]
    updated = events(d, "incident.updated")
    assert [(e["data"]["from"], e["data"]["to"]) for e in updated][-1] == ("resolved", "closed")
    assert len(updated) == 7
    # Closed is final: even a note is still possible, a status change is not.
    d.update_incident(inc, now=NOW + 50, note="post-mortem filed")
    with refused(d, "from closed: none", IllegalIncidentTransition):
        d.update_incident(inc, now=NOW + 51, status=S.OPEN)


# ── the timeline ───────────────────────────────────────────────────────────────────────────
def test_timeline_covers_the_vendors_people_and_their_keys_since_the_start(d: Directory) -> None:
    vic_key, val_key, alice_key = key_of(d, "vic"), key_of(d, "val"), key_of(d, "alice")
    since = NOW + 100
    # Before the start: not in it.
    d.create_key("vic", now=since - 1)
    # After: vic's and val's events are; alice's are not.
    d.revoke_key(vic_key, now=since + 1, reason="leaked")
    d.revoke_key(alice_key, now=since + 2, reason="unrelated")
    d.create_key("val", now=since + 3)
    d.revoke_key(val_key, now=since + 4, reason="precaution")
    inc = d.open_incident("t", now=since + 10, since=since, vendors=["acme"])
    db.integrate(d)
    with d.engine.connect() as conn:
        got = timeline(conn, inc)
    decoded = [orjson.loads(r) for _, r in got]
    assert [(e["name"], e["at"]) for e in decoded] == [
        ("credential.revoked", since + 1),
        ("credential.created", since + 3),
        ("credential.revoked", since + 4),
    ]
    assert {e["principal_id"] for e in decoded} == {
        ids(d, "principals", "vic"),
        ids(d, "principals", "val"),
    }
    # (leaf index, record) pairs: the index is the record's own and its place in the log.
    raw = db.recorded(d)
    for index, record in got:
        assert orjson.loads(record)["i"] == index
        assert raw[index] == record
    assert [i for i, _ in got] == sorted(i for i, _ in got)


def test_timeline_of_one_principal_leaves_out_the_rest_of_the_vendor(d: Directory) -> None:
    since = NOW + 100
    d.create_key("vic", now=since + 1)
    d.create_key("val", now=since + 2)
    inc = d.open_incident("t", now=since + 10, since=since, principals=["val"])
    db.integrate(d)
    with d.engine.connect() as conn:
        decoded = [orjson.loads(r) for _, r in timeline(conn, inc)]
    assert [(e["name"], e["principal_id"]) for e in decoded] == [
        ("credential.created", ids(d, "principals", "val"))
    ]


def test_timeline_is_bounded_by_its_limit(d: Directory) -> None:
    since = NOW + 100
    for i in range(5):
        d.create_key("vic", now=since + i)
    inc = d.open_incident("t", now=since + 10, since=since, principals=["vic"])
    db.integrate(d)
    with d.engine.connect() as conn:
        assert len(timeline(conn, inc)) == 5
        assert len(timeline(conn, inc, limit=2)) == 2
        assert len(timeline(conn, inc, limit=None)) == 5


def test_timeline_of_an_unknown_incident_is_not_found(d: Directory) -> None:
    db.integrate(d)
    with d.engine.connect() as conn, pytest.raises(NotFound):
        timeline(conn, "inc_nope")


# ── the report, from the store ─────────────────────────────────────────────────────────────
def test_report_lists_people_keys_with_state_locks_and_notes(d: Directory) -> None:
    since = NOW + 100
    vic_key, val_key = key_of(d, "vic"), key_of(d, "val")
    d.revoke_key(vic_key, now=since + 1, reason="leaked")
    inc = d.open_incident("Acme <leak>", now=since + 10, since=since, vendors=["acme"])
    linked = d.create_lock(LockKind.PRINCIPAL, "val", reason="hold", now=since + 11, incident=inc)
    unlinked = d.create_lock(LockKind.VENDOR, "acme", reason="vendor hold", now=since + 12)
    d.create_lock(LockKind.PRINCIPAL, "alice", reason="unrelated", now=since + 13)
    d.update_incident(inc, now=since + 14, status=S.CONTAINED, note="locked")
    db.integrate(d)
    with d.engine.connect() as conn:
        report = incident_report(conn, inc, since + 20)
    assert report["incident"] == {
        "id": inc,
        "title": "Acme <leak>",
        "status": "contained",
        "opened_by": "test",
        "opened_at": since + 10,
        "since": since,
        "subjects": {"vendors": ["acme"], "principals": [], "credentials": []},
    }
    assert report["principals"] == ["val", "vic"]
    assert sorted(c["principal"] for c in report["credentials"]) == ["val", "vic"]
    assert {c["id"]: c["state"] for c in report["credentials"]} == {
        vic_key: "revoked",
        val_key: "active",
    }
    assert [(lk["id"], lk["kind"], lk["target"]) for lk in report["locks"]] == [
        (linked["id"], "principal", "val"),
        (unlinked["id"], "vendor", "acme"),
    ]
    assert [(n["kind"], n["text"]) for n in report["notes"]] == [
        ("status", "opened"),
        ("action", f"lock {linked['id']}: principal val — hold"),
        ("status", "open → contained"),
        ("note", "locked"),
    ]
    # No calls in a store-only world: no models, sources or refusals.
    assert report["models"] == report["refusals"] == report["sources"] == []
    assert report["others_from_same_sources"] == []
    assert report["first_seen"] is report["last_seen"] is None
    # The timeline: vic's revocation and the principal lock on val (the incident's own
    # events carry no principal).
    assert [e["name"] for e in report["timeline"]] == ["credential.revoked", "lock.created"]
    assert report["events"] == 2
    assert report["generated_at"] == since + 20


def test_report_key_state_is_as_of_the_time_asked(d: Directory) -> None:
    created = d.create_key("vic", now=NOW, expires_in=50)
    inc = d.open_incident("t", now=NOW + 10, principals=["vic"])
    db.integrate(d)
    with d.engine.connect() as conn:
        early = incident_report(conn, inc, NOW + 20)
        late = incident_report(conn, inc, NOW + 60)
    state = {c["id"]: c["state"] for c in early["credentials"]}
    assert state[created.key.key_id] == "active"
    state = {c["id"]: c["state"] for c in late["credentials"]}
    assert state[created.key.key_id] == "expired"


OLD_KEY = "sk-old-upstream-PLAINTEXT-1111"


HERE = "http://127.0.0.1:9/v1"


def row(d: Directory, table: str, name: str) -> dict[str, Any]:
    return db.row(d, table, name)


def _id(d: Directory, name: str) -> str:
    return str(row(d, "principals", name)["id"])


# ── the timeline holds what a subject did as an admin ──────────────────────────────────────
def test_timeline_includes_events_whose_actor_is_a_subject(
    staffed: Directory, initialized: Initialized
) -> None:
    mallory = _id(staffed, "mallory")
    vic = _id(staffed, "vic")
    as_mallory = open_directory(initialized.settings, engine=staffed.engine, actor=mallory)
    others = open_directory(initialized.settings, engine=staffed.engine, actor=_id(staffed, "ann"))
    # Before the incident's window: not included.
    as_mallory.create_key("vic", now=NOW + 10, note="early")
    # In the window: mallory mints a key for vic, locks ann, lowers vic; someone else acts too.
    minted = as_mallory.create_key("vic", now=NOW + 110, note="backdoor")
    lock = as_mallory.create_lock(LockKind.PRINCIPAL, "ann", reason="cover", now=NOW + 120)
    as_mallory.update_principal("vic", now=NOW + 130, clearance=Level.PUBLIC)
    others.create_key("vic", now=NOW + 140, note="someone else")

    incident = staffed.open_incident(
        "rogue admin", now=NOW + 200, since=NOW + 100, principals=[mallory]
    )
    db.integrate(staffed)
    with staffed.engine.connect() as conn:
        lines = [orjson.loads(r) for _, r in timeline(conn, incident)]
        report = incident_report(conn, incident, NOW + 300)
    mine = [(e["name"], e["at"]) for e in lines if e["actor"] == mallory]
    assert mine == [
        ("credential.created", NOW + 110),
        ("lock.created", NOW + 120),
        ("principal.updated", NOW + 130),
    ]
    created = next(e for e in lines if e["name"] == "credential.created")
    assert created["credential_id"] == minted.key.key_id
    assert created["principal_id"] == vic  # about vic, done by mallory
    assert next(e for e in lines if e["name"] == "lock.created")["data"]["lock_id"] == lock["id"]
    # Not what others did to the same people, nor anything before the window.
    assert all(e["actor"] == mallory or e["principal_id"] == mallory for e in lines)
    assert all(e["at"] >= NOW + 100 for e in lines)
    assert [t["name"] for t in report["timeline"] if t["actor"] == mallory] == [
        "credential.created",
        "lock.created",
        "principal.updated",
    ]


def test_timeline_of_a_subject_who_did_nothing_as_an_admin(staffed: Directory) -> None:
    incident = staffed.open_incident("quiet", now=NOW + 200, since=NOW + 100, principals=["vic"])
    db.integrate(staffed)
    with staffed.engine.connect() as conn:
        assert timeline(conn, incident) == []
