"""The admin API's reads: lists and reports, their scope filter, and what counts as use.

Use is read from the audit log: ``request.allowed`` events, written here through the real
audit sink (``SqliteAuditSink``, as the gateway writes them) at chosen times and addresses,
and once end to end through a running gateway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa

from garrison.audit import AuditEvent, EventName
from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind, Status, UpstreamApi, VendorStatus
from garrison.errors import NotFound
from garrison.identity import parse_key
from garrison.store import Directory, queries
from garrison.store.directory import KEY_MAX_LIFETIME_S
from garrison.store.queries import DORMANT_DAYS, KEY_SOURCES_SHOWN
from tests.support import db
from tests.support.models import keyed_model, keyless_model
from tests.support.world import World

NOW = 1_800_000_000.0
DAY = 86400.0
# "Now" for the reports: forty days after the directory was set up.
LATER = NOW + 40 * DAY
UPSTREAM_SECRET = "sk-report-PLAINTEXT-9999"


class Setup:
    """The directory the reports read, and the ids the tests need."""

    def __init__(self, d: Directory) -> None:
        self.d = d
        d.create_principal(
            "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
        )
        for name, nets in (("acme", ["10.1.0.0/16"]), ("globex", ["10.9.0.0/16"])):
            d.create_vendor(
                name,
                sponsor="alice",
                contract_start=NOW - DAY,
                contract_end=NOW + 100 * DAY,
                networks=nets,
                seat_limit=6,
                ceiling_level=Level.INTERNAL,
                ceiling_compartments=["cyber"],
                agreement_ref=f"MSA-{name}",
                now=NOW,
            )
            d.set_vendor_status(name, VendorStatus.ACTIVE, now=NOW)
        self.acme = self.org_id("acme")
        self.globex = self.org_id("globex")
        self.internal = self.org_id("internal")

        def person(name: str, org: str, at: float = NOW, **kw: Any) -> str:
            return d.create_principal(
                name,
                org=org,
                kind=kw.pop("kind", PrincipalKind.HUMAN),
                clearance=kw.pop("clearance", Level.PUBLIC),
                now=at,
                **kw,
            )

        # acme: vic used 5 days ago; val never; vera disabled and never; vito used 31 days
        # ago; viv joined 10 days ago and never used; a service account used yesterday.
        self.vic = person("vic", "acme", clearance=Level.INTERNAL, compartments=["cyber"])
        self.val = person("val", "acme")
        self.vera = person("vera", "acme")
        self.vito = person("vito", "acme")
        self.viv = person("viv", "acme", at=LATER - 10 * DAY)
        self.bot = person("acme-bot", "acme", kind=PrincipalKind.SERVICE)
        d.set_principal_status("vera", Status.DISABLED, now=NOW)
        self.gus = person("gus", "globex")

        self.vic_a = d.create_key("vic", now=NOW, note="laptop").key.key_id
        self.vic_b = d.create_key("vic", now=NOW, networks=["10.1.2.0/24"]).key.key_id
        self.vic_old = d.create_key("vic", now=NOW).key.key_id
        d.revoke_key(self.vic_old, now=NOW + DAY, reason="rotated")
        self.vic_short = d.create_key("vic", now=NOW, expires_in=DAY).key.key_id
        self.vito_key = d.create_key("vito", now=NOW).key.key_id
        self.bot_key = d.create_key("acme-bot", now=NOW).key.key_id
        self.val_key = d.create_key("val", now=NOW).key.key_id
        self.gus_key = d.create_key("gus", now=NOW).key.key_id
        self.alice_key = d.create_key("alice", now=NOW).key.key_id

        keyed_model(d, "gpt", upstream_key=UPSTREAM_SECRET, now=NOW, upstream_model="up")
        keyless_model(d, "local", now=NOW, api=UpstreamApi.ANTHROPIC, compartments=["cyber"])

        write_events(
            d,
            [
                allowed(self.vic_a, self.vic, LATER - 20 * DAY, "10.1.0.5"),
                allowed(self.vic_a, self.vic, LATER - 6 * DAY, "10.1.0.7"),
                allowed(self.vic_a, self.vic, LATER - 7 * DAY, "10.1.0.5"),
                allowed(self.vic_b, self.vic, LATER - 5 * DAY, "10.1.2.9"),
                # A revoked key's use still counts as the principal's (it was used then).
                allowed(self.vic_old, self.vic, NOW + DAY / 2, "10.1.9.9"),
                allowed(self.vito_key, self.vito, LATER - 31 * DAY, "10.1.3.3"),
                allowed(self.bot_key, self.bot, LATER - DAY, "10.1.4.4"),
                # Refused and completed calls are not use.
                event(EventName.REQUEST_DENIED, self.val_key, self.val, LATER - DAY, "10.1.5.5"),
                event(EventName.REQUEST_DENIED, self.vic_a, self.vic, LATER - DAY, "10.7.7.7"),
                event(EventName.REQUEST_COMPLETED, self.vic_a, self.vic, LATER - DAY, "10.7.7.8"),
                allowed(self.gus_key, self.gus, LATER - DAY, "10.9.0.1"),
                allowed(self.alice_key, "x", LATER - DAY, "192.0.2.1"),
            ],
        )

    def org_id(self, name: str) -> str:
        with self.d.engine.connect() as conn:
            return str(
                conn.execute(sa.select(queries.o.c.id).where(queries.o.c.name == name)).scalar_one()
            )


def event(name: EventName, key_id: str, principal_id: str, at: float, address: str) -> AuditEvent:
    return AuditEvent(
        name,
        at=at,
        actor=principal_id,
        request_id=f"req_{key_id}_{int(at)}",
        principal_id=principal_id,
        credential_id=key_id,
        model="gpt",
        data={"endpoint": "chat", "client_address": address},
    )


def allowed(key_id: str, principal_id: str, at: float, address: str) -> AuditEvent:
    return event(EventName.REQUEST_ALLOWED, key_id, principal_id, at, address)


def write_events(d: Directory, events: Iterable[AuditEvent]) -> None:
    db.write_events(d, events)


@pytest.fixture
def s(initialized: Initialized) -> Iterator[Setup]:
    d = open_directory(initialized.settings, actor="test")
    try:
        yield Setup(d)
    finally:
        d.engine.dispose()


def read(s: Setup, fn: Any, *args: Any, **kw: Any) -> Any:
    with s.d.engine.connect() as conn:
        return fn(conn, *args, **kw)


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


# ── vendor_report ──────────────────────────────────────────────────────────────────────────
def test_vendor_report_terms(s: Setup) -> None:
    report = read(s, queries.vendor_report, "acme", LATER)
    assert report["id"] == s.acme and report["name"] == "acme"
    assert report["terms"] == {
        "status": "active",
        "sponsor": "alice",
        "contract_start": NOW - DAY,
        "contract_end": NOW + 100 * DAY,
        "seat_limit": 6,
        "ceiling": "internal",
        "ceiling_compartments": ["cyber"],
        "networks": ["10.1.0.0/16"],
        "agreement_ref": "MSA-acme",
        "security_review_at": None,
    }
    assert report["contract_days_left"] == 60
    assert report["dormant_days"] == DORMANT_DAYS


def test_vendor_report_counts_active_seats(s: Setup) -> None:
    report = read(s, queries.vendor_report, "acme", LATER)
    # vic, val, vito, viv, acme-bot active; vera disabled.
    assert report["seats_used"] == 5
    assert [p["name"] for p in report["principals"]] == [
        "acme-bot",
        "val",
        "vera",
        "vic",
        "vito",
        "viv",
    ]
    s.d.set_principal_status("val", Status.DISABLED, now=LATER)
    assert read(s, queries.vendor_report, "acme", LATER)["seats_used"] == 4


def test_vendor_report_dormant_seats(s: Setup) -> None:
    report = read(s, queries.vendor_report, "acme", LATER)
    # val: active, never used, joined 40 days ago; vito: last allowed call 31 days ago.
    # Not: vic (5 days), acme-bot (1 day), viv (joined 10 days ago), vera (disabled).
    assert report["dormant"] == ["val", "vito"]


def test_dormant_days_is_the_window(s: Setup) -> None:
    assert read(s, queries.vendor_report, "acme", LATER, dormant_days=60)["dormant"] == []
    assert read(s, queries.vendor_report, "acme", LATER, dormant_days=32)["dormant"] == ["val"]
    assert read(s, queries.vendor_report, "acme", LATER, dormant_days=6)["dormant"] == [
        "val",
        "vito",
        "viv",
    ]
    assert read(s, queries.vendor_report, "acme", LATER, dormant_days=1)["dormant"] == [
        "val",
        "vic",
        "vito",
        "viv",
    ]


def test_a_denied_call_does_not_wake_a_dormant_seat(s: Setup) -> None:
    # val's only traffic is a refused call yesterday.
    report = read(s, queries.vendor_report, "acme", LATER)
    assert "val" in report["dormant"]
    assert by_name(report["principals"])["val"]["last_used"] is None


def test_an_allowed_call_wakes_a_dormant_seat(s: Setup) -> None:
    write_events(s.d, [allowed(s.val_key, s.val, LATER - 60, "10.1.0.9")])
    report = read(s, queries.vendor_report, "acme", LATER)
    assert report["dormant"] == ["vito"]
    assert by_name(report["principals"])["val"]["last_used"] == LATER - 60


def test_disabling_a_dormant_seat_takes_it_off_the_list(s: Setup) -> None:
    s.d.set_principal_status("vito", Status.DISABLED, now=LATER)
    assert read(s, queries.vendor_report, "acme", LATER)["dormant"] == ["val"]


def test_vendor_report_people_and_their_keys(s: Setup) -> None:
    people = by_name(read(s, queries.vendor_report, "acme", LATER)["principals"])
    vic = people["vic"]
    assert vic["status"] == "active" and vic["clearance"] == "internal"
    assert vic["last_used"] == LATER - 5 * DAY
    keys = {k["id"]: k for k in vic["keys"]}
    assert set(keys) == {s.vic_a, s.vic_b, s.vic_old, s.vic_short}
    assert keys[s.vic_a]["last_used"] == LATER - 6 * DAY
    assert keys[s.vic_a]["sources"] == ["10.1.0.5", "10.1.0.7"]
    assert keys[s.vic_old]["state"] == "revoked"
    assert keys[s.vic_short]["state"] == "expired"
    assert keys[s.vic_short]["last_used"] is None and keys[s.vic_short]["sources"] == []
    assert people["vera"]["status"] == "disabled" and people["vera"]["last_used"] is None
    # Another vendor's people and keys are not in this report.
    assert "gus" not in people
    assert all(k["principal_id"] != s.gus for p in people.values() for k in p["keys"])


# ── principal_report ───────────────────────────────────────────────────────────────────────
def test_principal_report_last_used_and_sources(s: Setup) -> None:
    report = read(s, queries.principal_report, "vic", LATER)
    assert report["id"] == s.vic and report["org"] == "acme" and report["org_id"] == s.acme
    assert report["clearance"] == "internal" and report["compartments"] == ["cyber"]
    assert report["roles"] == [] and report["status"] == "active"
    assert report["kind"] == "human" and report["created_at"] == NOW
    assert report["last_used"] == LATER - 5 * DAY
    keys = {k["id"]: k for k in report["keys"]}
    assert keys[s.vic_a] == {
        "id": s.vic_a,
        "principal_id": s.vic,
        "state": "active",
        "created_at": NOW,
        "expires_at": NOW + KEY_MAX_LIFETIME_S,
        "revoked_at": None,
        "networks": ["10.1.0.0/16"],
        "note": "laptop",
        "cert_thumbprint": None,  # a key bound to a client certificate names it here
        "canary": False,
        "last_used": LATER - 6 * DAY,
        "sources": ["10.1.0.5", "10.1.0.7"],
    }
    assert keys[s.vic_b]["sources"] == ["10.1.2.9"]
    assert keys[s.vic_b]["networks"] == ["10.1.2.0/24"]
    assert keys[s.vic_old]["last_used"] == NOW + DAY / 2
    assert keys[s.vic_old]["revoked_at"] == NOW + DAY
    # Denied and completed calls are not sources.
    assert not {"10.7.7.7", "10.7.7.8"} & {a for k in keys.values() for a in k["sources"]}


def test_principal_report_by_id_equals_by_name(s: Setup) -> None:
    assert read(s, queries.principal_report, s.vic, LATER) == read(
        s, queries.principal_report, "vic", LATER
    )


def test_principal_never_used(s: Setup) -> None:
    report = read(s, queries.principal_report, "val", LATER)
    assert report["last_used"] is None
    assert [k["sources"] for k in report["keys"]] == [[]]


def test_principal_without_keys(s: Setup) -> None:
    report = read(s, queries.principal_report, "vera", LATER)
    assert report["keys"] == [] and report["last_used"] is None


def test_sources_are_distinct_sorted_and_capped(s: Setup) -> None:
    addresses = [f"10.1.7.{i}" for i in range(KEY_SOURCES_SHOWN + 5)]
    write_events(
        s.d,
        [allowed(s.val_key, s.val, LATER - 100 + i, a) for i, a in enumerate(addresses * 2)],
    )
    (key,) = read(s, queries.principal_report, "val", LATER)["keys"]
    assert len(key["sources"]) == KEY_SOURCES_SHOWN
    assert key["sources"] == sorted(set(key["sources"]))
    assert set(key["sources"]) <= set(addresses)


def test_ipv6_sources(s: Setup) -> None:
    write_events(
        s.d,
        [
            allowed(s.val_key, s.val, LATER - 2, "2001:db8::1"),
            allowed(s.val_key, s.val, LATER - 1, "2001:db8::1"),
        ],
    )
    (key,) = read(s, queries.principal_report, "val", LATER)["keys"]
    assert key["sources"] == ["2001:db8::1"] and key["last_used"] == LATER - 1


# ── scope ──────────────────────────────────────────────────────────────────────────────────
def test_scope_hides_other_orgs_in_lists(s: Setup) -> None:
    scope = {s.acme}
    assert [o["name"] for o in read(s, queries.list_orgs, scope)] == ["acme"]
    assert [v["name"] for v in read(s, queries.list_vendors, LATER, scope)] == ["acme"]
    names = {p["name"] for p in read(s, queries.list_principals, scope)}
    assert names == {"acme-bot", "val", "vera", "vic", "vito", "viv"}
    keys = read(s, queries.list_keys, LATER, scope)
    assert {k["principal"] for k in keys} == {"vic", "vito", "acme-bot", "val"}
    assert s.gus_key not in {k["id"] for k in keys}


def test_scope_of_two_vendors(s: Setup) -> None:
    scope = {s.acme, s.globex}
    assert [o["name"] for o in read(s, queries.list_orgs, scope)] == ["acme", "globex"]
    assert "gus" in {p["name"] for p in read(s, queries.list_principals, scope)}
    assert "alice" not in {p["name"] for p in read(s, queries.list_principals, scope)}


def test_empty_scope_shows_nothing(s: Setup) -> None:
    assert read(s, queries.list_orgs, set()) == []
    assert read(s, queries.list_vendors, LATER, frozenset()) == []
    assert read(s, queries.list_principals, ()) == []
    assert read(s, queries.list_keys, LATER, ()) == []


def test_no_scope_shows_everything(s: Setup) -> None:
    assert [o["name"] for o in read(s, queries.list_orgs)] == ["acme", "globex", "internal"]
    assert [v["name"] for v in read(s, queries.list_vendors, LATER)] == ["acme", "globex"]
    assert {"admin", "alice", "gus", "vic"} <= {p["name"] for p in read(s, queries.list_principals)}


@pytest.mark.parametrize("ref", ["alice", "gus", "admin"])
def test_scope_hides_other_orgs_principals(s: Setup, ref: str) -> None:
    with pytest.raises(NotFound, match=f"no principal '{ref}'"):
        read(s, queries.principal_report, ref, LATER, {s.acme})


def test_scope_hides_a_principal_named_by_id(s: Setup) -> None:
    with pytest.raises(NotFound):
        read(s, queries.principal_report, s.gus, LATER, {s.acme})
    assert read(s, queries.principal_report, s.vic, LATER, {s.acme})["name"] == "vic"


def test_scope_hides_other_vendors_report(s: Setup) -> None:
    with pytest.raises(NotFound, match="no vendor 'globex'"):
        read(s, queries.vendor_report, "globex", LATER, orgs={s.acme})
    with pytest.raises(NotFound):
        read(s, queries.vendor_report, s.globex, LATER, orgs={s.acme})
    assert read(s, queries.vendor_report, "acme", LATER, orgs={s.acme})["name"] == "acme"


def test_scoped_list_filters_combine(s: Setup) -> None:
    scope = {s.acme}
    assert read(s, queries.list_principals, scope, org="globex") == []
    assert [p["name"] for p in read(s, queries.list_principals, scope, kind="service")] == [
        "acme-bot"
    ]
    assert read(s, queries.list_keys, LATER, scope, principal="gus") == []
    assert {k["id"] for k in read(s, queries.list_keys, LATER, scope, principal="vic")} == {
        s.vic_a,
        s.vic_b,
        s.vic_old,
        s.vic_short,
    }


# ── lists ──────────────────────────────────────────────────────────────────────────────────
def test_list_vendors(s: Setup) -> None:
    (acme,) = [v for v in read(s, queries.list_vendors, LATER) if v["name"] == "acme"]
    assert acme == {
        "id": s.acme,
        "name": "acme",
        "status": "active",
        "contract_end": NOW + 100 * DAY,
        "days_left": 60,
        "seat_limit": 6,
        "ceiling": "internal",
    }
    (after,) = [v for v in read(s, queries.list_vendors, NOW + 200 * DAY) if v["name"] == "acme"]
    assert after["days_left"] == 0


def test_list_principals_filters(s: Setup) -> None:
    acme = read(s, queries.list_principals, org="acme")
    assert [p["name"] for p in acme] == ["acme-bot", "val", "vera", "vic", "vito", "viv"]
    assert read(s, queries.list_principals, org=s.acme) == acme
    services = read(s, queries.list_principals, kind="service")
    assert [p["name"] for p in services] == ["acme-bot"]
    (vic,) = [p for p in acme if p["name"] == "vic"]
    assert vic == {
        "id": s.vic,
        "name": "vic",
        "org": "acme",
        "org_id": s.acme,
        "kind": "human",
        "clearance": "internal",
        "compartments": ["cyber"],
        "roles": [],
        "status": "active",
        "created_at": NOW,
    }


def test_list_keys_states_and_no_secrets(s: Setup) -> None:
    keys = {k["id"]: k for k in read(s, queries.list_keys, LATER, principal="vic")}
    assert {k: v["state"] for k, v in keys.items()} == {
        s.vic_a: "active",
        s.vic_b: "active",
        s.vic_old: "revoked",
        s.vic_short: "expired",
    }
    for key in keys.values():
        assert set(key) == {
            "id",
            "principal",
            "principal_id",
            "state",
            "created_at",
            "expires_at",
            "networks",
            "note",
            "canary",
            "provenance",  # how the key came to be, and who made it (issue 12)
            "created_by",
            "cert_thumbprint",  # the client certificate a key is bound to (issue 16)
        }


def test_models_never_show_the_upstream_key(s: Setup) -> None:
    models = by_name(read(s, queries.list_models))
    assert models["gpt"]["upstream_key"] == "sealed"
    assert models["local"]["upstream_key"] == "none"
    assert read(s, queries.show_model, "gpt") == models["gpt"]
    assert models["local"] == {
        "id": models["local"]["id"],
        "name": "local",
        "upstream_url": "http://127.0.0.1:10/v1",
        "upstream_model": "llama",
        "api": "anthropic",
        "auth_style": "none",
        "level": "public",
        "compartments": ["cyber"],
        "upstream_key": "none",
        "extra_fields": [],
        # Its own CA bundle and client certificate for an https upstream (paths; none here).
        "tls_ca_file": None,
        "tls_client_cert_file": None,
        "tls_client_key_file": None,
        "created_at": NOW,
    }
    assert UPSTREAM_SECRET not in orjson.dumps(read(s, queries.list_models)).decode()


# ── NotFound and lookups ───────────────────────────────────────────────────────────────────
def test_unknown_refs_are_not_found(s: Setup) -> None:
    with pytest.raises(NotFound, match="no principal 'ghost'") as exc:
        read(s, queries.principal_report, "ghost", LATER)
    assert exc.value.status == 404
    with pytest.raises(NotFound, match="no vendor 'ghost'"):
        read(s, queries.vendor_report, "ghost", LATER)
    with pytest.raises(NotFound, match="no model 'ghost'"):
        read(s, queries.show_model, "ghost")


def test_the_internal_org_is_not_a_vendor(s: Setup) -> None:
    with pytest.raises(NotFound, match="no vendor 'internal'"):
        read(s, queries.vendor_report, "internal", LATER)


def test_org_of(s: Setup) -> None:
    assert read(s, queries.org_of, "org", "acme") == s.acme
    assert read(s, queries.org_of, "org", s.globex) == s.globex
    assert read(s, queries.org_of, "principal", "vic") == s.acme
    assert read(s, queries.org_of, "principal", s.gus) == s.globex
    assert read(s, queries.org_of, "principal", "alice") == s.internal
    assert read(s, queries.org_of, "credential", s.vic_a) == s.acme
    assert read(s, queries.org_of, "credential", s.alice_key) == s.internal
    for kind in ("org", "principal", "credential"):
        assert read(s, queries.org_of, kind, "ghost") is None


def test_key_state() -> None:
    class Row:
        def __init__(self, revoked_at: float | None, expires_at: float | None) -> None:
            self.revoked_at, self.expires_at = revoked_at, expires_at

    assert queries.key_state(Row(None, NOW + 1), NOW) == "active"
    assert queries.key_state(Row(None, None), NOW) == "active"
    assert queries.key_state(Row(None, NOW), NOW) == "expired"
    assert queries.key_state(Row(NOW - 1, NOW + 1), NOW) == "revoked"
    assert queries.key_state(Row(NOW - 1, NOW - 2), NOW) == "revoked"


# ── end to end: a real call through the gateway ────────────────────────────────────────────
async def test_a_real_call_is_the_keys_last_use(world: World) -> None:
    import time

    token = world.keys["bob"]
    parsed = parse_key(token)
    assert parsed is not None
    started = time.time()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps(
                {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
            ),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 200
        await resp.read()
    await world.settle()
    with world.directory.engine.connect() as conn:
        report = queries.principal_report(conn, "bob", time.time())
        vendor = queries.vendor_report(conn, "contractor-co", time.time(), dormant_days=1)
    used = [k for k in report["keys"] if k["last_used"] is not None]
    assert len(used) == 1
    (key,) = used
    assert key["id"] == parsed.key_id
    assert key["sources"] == ["127.0.0.1"]
    assert started <= key["last_used"] <= time.time()
    assert report["last_used"] == key["last_used"]
    assert by_name(vendor["principals"])["bob"]["last_used"] == key["last_used"]
    assert "bob" not in vendor["dormant"]
