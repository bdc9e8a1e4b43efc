"""Review fixes in the store, with a fixed ``now``:

* 2 — re-pointing a model (URL, upstream model, API) is sensitive; an applied move of the
  URL to a new host without a new key drops the sealed key and the auth style becomes none
  (recorded as ``"upstream_key": "removed (new host)"``), while the same host keeps it;
* 3 — compare and set: ``update_principal`` / ``update_model`` with ``forbid_sensitive``
  raise ``Conflict`` when, under the write lock, a change judged harmless has become
  sensitive because the row changed meanwhile — and write nothing;
* 7 — an incident's timeline holds the events whose actor is a subject principal (keys
  minted, locks placed by an admin under investigation).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from garrison.bootstrap import Initialized, init, open_directory
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi
from garrison.domain.locks import LockKind
from garrison.errors import Conflict
from garrison.keyring import Sealer
from garrison.store import Directory
from garrison.store.changes import model_change_is_sensitive, principal_change_is_sensitive
from garrison.store.incidents import incident_report, timeline
from tests.support.db import connect as _db
from tests.support.db import row_counts

NOW = 1_800_000_000.0
OLD_KEY = "sk-old-upstream-PLAINTEXT-1111"
NEW_KEY = "sk-new-upstream-PLAINTEXT-2222"
HERE = "http://127.0.0.1:9/v1"


@pytest.fixture
def initialized(tmp_path: Path) -> Initialized:
    return init(tmp_path / "data")


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    """``gpt`` (openai, bearer, keyed, internal, [cyber]); ``ann`` critical in
    [bio, cyber]; ``mallory`` a security-admin; ``vic`` a plain internal principal."""
    dr = open_directory(initialized.settings, actor="test")
    dr.create_model(
        "gpt",
        upstream_url=HERE,
        upstream_model="up-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=["cyber"],
        upstream_key=OLD_KEY,
        now=NOW,
    )
    dr.create_principal(
        "ann",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.CRITICAL,
        compartments=["bio", "cyber"],
        now=NOW,
    )
    dr.create_principal(
        "mallory",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.INTERNAL,
        roles=["security-admin"],
        now=NOW,
    )
    dr.create_principal(
        "vic", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    try:
        yield dr
    finally:
        dr.engine.dispose()


def row(d: Directory, table: str, name: str) -> dict[str, Any]:
    conn = _db(d)
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute(f"SELECT * FROM {table} WHERE name = ?", (name,)).fetchone()  # noqa: S608
    finally:
        conn.close()
    assert found is not None, name
    return dict(found)


def sql(d: Directory, query: str, *params: Any) -> None:
    """A direct write: someone else changing the row meanwhile."""
    conn = _db(d)
    try:
        conn.execute(query, params)
        conn.commit()
    finally:
        conn.close()


def events(d: Directory, name: str) -> list[dict[str, Any]]:
    conn = _db(d)
    try:
        rows = conn.execute(
            "SELECT record FROM audit_events WHERE name = ? ORDER BY seq", (name,)
        ).fetchall()
    finally:
        conn.close()
    return [orjson.loads(r[0]) for r in rows]


@contextmanager
def nothing_written(d: Directory, table: str, name: str) -> Iterator[None]:
    counts = row_counts(d)
    before = row(d, table, name)
    yield
    assert row_counts(d) == counts
    assert row(d, table, name) == before


def key_of(d: Directory, sealer: Sealer, name: str) -> str | None:
    sealed = row(d, "models", name)["upstream_key_sealed"]
    return None if sealed is None else sealer.unseal(sealed).reveal()


@pytest.fixture
def sealer(initialized: Initialized) -> Sealer:
    return Sealer.from_dir(initialized.settings.key_dir)


# ── 2: re-pointing a model ─────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "changes",
    [
        {"upstream_url": ["http://a/v1", "http://b/v1"]},
        {"upstream_url": ["http://a/v1", "http://a/v2"]},
        {"upstream_model": ["up-small", "up-large"]},
        {"api": ["openai", "anthropic"]},
        {"level": ["internal", "critical"], "api": ["openai", "anthropic"]},
        # How the credential is sent is two-person too (issue 11, item 3).
        {"auth_style": ["bearer", "x-api-key"]},
    ],
    ids=["url-host", "url-path", "upstream-model", "api", "api-with-a-raise", "auth-style"],
)
def test_re_pointing_a_model_is_sensitive(changes: dict[str, Any]) -> None:
    assert model_change_is_sensitive(changes)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"upstream_key": "replaced"},
        {"level": ["internal", "critical"]},
        {"compartments": [["cyber"], ["bio", "cyber"]]},
    ],
    ids=["nothing", "key", "raise-level", "add-compartment"],
)
def test_other_model_changes_are_not_sensitive(changes: dict[str, Any]) -> None:
    assert not model_change_is_sensitive(changes)


def test_dry_run_of_a_re_pointing_reports_it_and_writes_nothing(d: Directory) -> None:
    with nothing_written(d, "models", "gpt"):
        changes = d.update_model("gpt", now=NOW, upstream_model="up-large", dry_run=True)
    assert changes == {"upstream_model": ["up-small", "up-large"]}
    assert model_change_is_sensitive(changes)


def test_a_new_host_without_a_new_key_drops_the_old_key(d: Directory, sealer: Sealer) -> None:
    assert key_of(d, sealer, "gpt") == OLD_KEY
    changes = d.update_model("gpt", now=NOW + 5, upstream_url="https://llm.example.net/v1")
    assert changes == {
        "upstream_url": [HERE, "https://llm.example.net/v1"],
        "upstream_key": "removed (new host)",
        "auth_style": ["bearer", "none"],
    }
    stored = row(d, "models", "gpt")
    assert stored["upstream_key_sealed"] is None
    assert stored["auth_style"] == "none"
    assert stored["upstream_url"] == "https://llm.example.net/v1"
    (event,) = events(d, "model.updated")
    assert event["data"] == {"name": "gpt", "changes": changes}
    assert event["at"] == NOW + 5
    assert OLD_KEY.encode() not in orjson.dumps(event)


def test_a_dry_run_to_a_new_host_says_the_key_goes(d: Directory, sealer: Sealer) -> None:
    with nothing_written(d, "models", "gpt"):
        changes = d.update_model("gpt", now=NOW, upstream_url="http://10.9.9.9/v1", dry_run=True)
    assert changes["upstream_key"] == "removed (new host)"
    assert key_of(d, sealer, "gpt") == OLD_KEY


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:10/v1", "http://127.0.0.2:9/v1", "http://localhost:9/v1"],
    ids=["other-port", "other-address", "other-name"],
)
def test_any_other_host_or_port_is_a_new_host(d: Directory, url: str) -> None:
    changes = d.update_model("gpt", now=NOW, upstream_url=url)
    assert changes["upstream_key"] == "removed (new host)"
    assert row(d, "models", "gpt")["upstream_key_sealed"] is None


def test_the_same_host_keeps_its_key(d: Directory, sealer: Sealer) -> None:
    changes = d.update_model("gpt", now=NOW, upstream_url="http://127.0.0.1:9/v2/")
    assert changes == {"upstream_url": [HERE, "http://127.0.0.1:9/v2"]}
    assert key_of(d, sealer, "gpt") == OLD_KEY
    assert row(d, "models", "gpt")["auth_style"] == "bearer"


def test_a_new_host_with_a_new_key_gets_the_new_key(d: Directory, sealer: Sealer) -> None:
    changes = d.update_model(
        "gpt", now=NOW, upstream_url="https://llm.example.net/v1", upstream_key=NEW_KEY
    )
    assert changes == {
        "upstream_url": [HERE, "https://llm.example.net/v1"],
        "upstream_key": "replaced",
    }
    assert key_of(d, sealer, "gpt") == NEW_KEY
    assert row(d, "models", "gpt")["auth_style"] == "bearer"


def test_a_new_host_with_an_explicit_auth_style_keeps_that_style(d: Directory) -> None:
    changes = d.update_model(
        "gpt", now=NOW, upstream_url="https://llm.example.net/v1", auth_style=AuthStyle.X_API_KEY
    )
    assert changes["upstream_key"] == "removed (new host)"
    assert changes["auth_style"] == ["bearer", "x-api-key"]
    stored = row(d, "models", "gpt")
    assert stored["upstream_key_sealed"] is None and stored["auth_style"] == "x-api-key"


def test_a_new_host_for_a_keyless_model_changes_only_the_url(d: Directory) -> None:
    d.update_model("gpt", now=NOW, clear_upstream_key=True, auth_style=AuthStyle.NONE)
    changes = d.update_model("gpt", now=NOW + 1, upstream_url="https://llm.example.net/v1")
    assert changes == {"upstream_url": [HERE, "https://llm.example.net/v1"]}


# ── 3: compare and set ─────────────────────────────────────────────────────────────────────
def test_principal_lowering_that_became_a_raise_is_refused(d: Directory) -> None:
    # Judged: critical → restricted, a lowering, applied at once by one admin.
    preview = d.update_principal("ann", now=NOW, clearance=Level.RESTRICTED, dry_run=True)
    assert preview == {"clearance": ["critical", "restricted"]}
    assert not principal_change_is_sensitive(preview)
    # Meanwhile someone lowers ann to internal: the same request is now a raise.
    sql(d, "UPDATE principals SET clearance = ? WHERE name = 'ann'", int(Level.INTERNAL))
    with nothing_written(d, "principals", "ann"), pytest.raises(Conflict) as raised:
        d.update_principal("ann", now=NOW + 1, clearance=Level.RESTRICTED, forbid_sensitive=True)
    assert raised.value.status == 409
    assert "two admins" in str(raised.value)
    assert row(d, "principals", "ann")["clearance"] == int(Level.INTERNAL)
    assert events(d, "principal.updated") == []


def test_principal_compartment_removal_that_became_an_addition_is_refused(d: Directory) -> None:
    preview = d.update_principal("ann", now=NOW, compartments=["cyber"], dry_run=True)
    assert preview == {"compartments": [["bio", "cyber"], ["cyber"]]}
    assert not principal_change_is_sensitive(preview)
    sql(d, "UPDATE principals SET compartments = '[\"bio\"]' WHERE name = 'ann'")
    with nothing_written(d, "principals", "ann"), pytest.raises(Conflict):
        d.update_principal("ann", now=NOW + 1, compartments=["cyber"], forbid_sensitive=True)


def test_principal_role_removal_that_became_an_addition_is_refused(d: Directory) -> None:
    d.update_principal("vic", now=NOW, roles=["auditor", "approver"])
    preview = d.update_principal("vic", now=NOW, roles=["auditor"], dry_run=True)
    assert not principal_change_is_sensitive(preview)
    sql(d, "UPDATE principals SET roles = '[]' WHERE name = 'vic'")
    with nothing_written(d, "principals", "vic"), pytest.raises(Conflict):
        d.update_principal("vic", now=NOW + 1, roles=["auditor"], forbid_sensitive=True)


def test_principal_change_still_harmless_is_applied(d: Directory) -> None:
    sql(d, "UPDATE principals SET clearance = ? WHERE name = 'ann'", int(Level.RESTRICTED))
    changes = d.update_principal(
        "ann", now=NOW, clearance=Level.INTERNAL, compartments=[], forbid_sensitive=True
    )
    assert changes == {
        "clearance": ["restricted", "internal"],
        "compartments": [["bio", "cyber"], []],
    }
    assert row(d, "principals", "ann")["clearance"] == int(Level.INTERNAL)


def test_forbid_sensitive_refuses_a_raise_outright(d: Directory) -> None:
    with nothing_written(d, "principals", "vic"), pytest.raises(Conflict):
        d.update_principal("vic", now=NOW, clearance=Level.CRITICAL, forbid_sensitive=True)
    # Without it (the approved, two-person path), the same change applies.
    assert d.update_principal("vic", now=NOW, clearance=Level.CRITICAL) == {
        "clearance": ["internal", "critical"]
    }


def test_model_raise_that_became_a_lowering_is_refused(d: Directory) -> None:
    preview = d.update_model("gpt", now=NOW, level=Level.RESTRICTED, dry_run=True)
    assert preview == {"level": ["internal", "restricted"]}
    assert not model_change_is_sensitive(preview)
    # Meanwhile the model was raised to critical: restricted is now a lowering.
    sql(d, "UPDATE models SET level = ? WHERE name = 'gpt'", int(Level.CRITICAL))
    with nothing_written(d, "models", "gpt"), pytest.raises(Conflict) as raised:
        d.update_model("gpt", now=NOW + 1, level=Level.RESTRICTED, forbid_sensitive=True)
    assert raised.value.status == 409
    assert events(d, "model.updated") == []


def test_model_compartment_addition_that_became_a_removal_is_refused(d: Directory) -> None:
    preview = d.update_model("gpt", now=NOW, compartments=["bio", "cyber"], dry_run=True)
    assert not model_change_is_sensitive(preview)
    sql(d, "UPDATE models SET compartments = '[\"cyber\",\"nuclear\"]' WHERE name = 'gpt'")
    with nothing_written(d, "models", "gpt"), pytest.raises(Conflict):
        d.update_model("gpt", now=NOW + 1, compartments=["bio", "cyber"], forbid_sensitive=True)


@pytest.mark.parametrize(
    ("field", "column", "value", "meanwhile"),
    [
        ("upstream_url", "upstream_url", HERE, "http://127.0.0.1:9/v9"),
        ("upstream_model", "upstream_model", "up-small", "up-other"),
        ("api", "api", UpstreamApi.OPENAI, "anthropic"),
    ],
    ids=["url", "upstream-model", "api"],
)
def test_model_no_op_that_became_a_re_pointing_is_refused(
    d: Directory, field: str, column: str, value: Any, meanwhile: str
) -> None:
    # Judged: setting the field to what it is (plus a harmless raise) — nothing sensitive.
    kw = {field: value, "level": Level.RESTRICTED}
    preview = d.update_model("gpt", now=NOW, dry_run=True, **kw)
    assert preview == {"level": ["internal", "restricted"]}
    # Meanwhile the model was re-pointed: the same request would now point it back.
    sql(d, f"UPDATE models SET {column} = ? WHERE name = 'gpt'", meanwhile)  # noqa: S608
    with nothing_written(d, "models", "gpt"), pytest.raises(Conflict):
        d.update_model("gpt", now=NOW + 1, forbid_sensitive=True, **kw)


def test_model_change_still_harmless_is_applied(d: Directory, sealer: Sealer) -> None:
    changes = d.update_model(
        "gpt",
        now=NOW,
        level=Level.CRITICAL,
        compartments=["bio", "cyber"],
        upstream_key=NEW_KEY,
        forbid_sensitive=True,
    )
    assert changes == {
        "level": ["internal", "critical"],
        "compartments": [["cyber"], ["bio", "cyber"]],
        "upstream_key": "replaced",
    }
    assert key_of(d, sealer, "gpt") == NEW_KEY


def test_forbid_sensitive_refuses_a_re_pointing_outright(d: Directory) -> None:
    with nothing_written(d, "models", "gpt"), pytest.raises(Conflict):
        d.update_model("gpt", now=NOW, upstream_model="up-large", forbid_sensitive=True)


# ── 7: the timeline holds what a subject did as an admin ───────────────────────────────────
def _id(d: Directory, name: str) -> str:
    return str(row(d, "principals", name)["id"])


def test_timeline_includes_events_whose_actor_is_a_subject(
    d: Directory, initialized: Initialized
) -> None:
    mallory = _id(d, "mallory")
    vic = _id(d, "vic")
    as_mallory = open_directory(initialized.settings, engine=d.engine, actor=mallory)
    others = open_directory(initialized.settings, engine=d.engine, actor=_id(d, "ann"))
    # Before the incident's window: not included.
    as_mallory.create_key("vic", now=NOW + 10, note="early")
    # In the window: mallory mints a key for vic, locks ann, lowers vic; someone else acts too.
    minted = as_mallory.create_key("vic", now=NOW + 110, note="backdoor")
    lock = as_mallory.create_lock(LockKind.PRINCIPAL, "ann", reason="cover", now=NOW + 120)
    as_mallory.update_principal("vic", now=NOW + 130, clearance=Level.PUBLIC)
    others.create_key("vic", now=NOW + 140, note="someone else")

    incident = d.open_incident("rogue admin", now=NOW + 200, since=NOW + 100, principals=[mallory])
    with d.engine.connect() as conn:
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


def test_timeline_of_a_subject_who_did_nothing_as_an_admin(d: Directory) -> None:
    incident = d.open_incident("quiet", now=NOW + 200, since=NOW + 100, principals=["vic"])
    with d.engine.connect() as conn:
        assert timeline(conn, incident) == []
