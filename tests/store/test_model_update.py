"""Changing a registered model: each field's before and after are returned and recorded in
one ``model.updated`` event; the upstream credential is resealed and recorded only as
"added" / "replaced" / "removed" — its plaintext is never in the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.errors import BadRequest, Conflict
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot
from garrison.store.changes import model_change_is_sensitive
from tests.support.db import (
    events,
    nothing_written,
    one,
    recorded,
    row,
    rows,
    sql,
    stored_bytes,
)
from tests.support.db import row_counts as counts
from tests.support.models import KEYED_URL, keyed_model, keyless_model

NOW = 1_800_000_000.0
OLD_KEY = "sk-old-upstream-PLAINTEXT-1111"
HERE = KEYED_URL  # gpt's, here and in the staffed fixture (tests/store/conftest.py)
NEW_KEY = "sk-new-upstream-PLAINTEXT-2222"


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    """``gpt`` (openai, bearer, keyed, internal, [cyber]) and ``local`` (no key, auth none)."""
    dr = open_directory(initialized.settings, actor="test")
    keyed_model(dr, "gpt", upstream_key=OLD_KEY, now=NOW, compartments=["cyber"])
    keyless_model(dr, "local", now=NOW)
    try:
        yield dr
    finally:
        dr.engine.dispose()


@pytest.fixture
def sealer(initialized: Initialized) -> Sealer:
    return Sealer.from_dir(initialized.settings.key_dir)


def model_row(d: Directory, name: str) -> dict[str, Any]:
    return row(d, "models", name)


def audit_rows(d: Directory) -> list[dict[str, Any]]:
    return rows(d, "SELECT * FROM audit_events ORDER BY seq") + rows(
        d, "SELECT * FROM audit_outbox ORDER BY seq"
    )


def updates(d: Directory) -> list[dict[str, Any]]:
    out = []
    for r in audit_rows(d):
        if r["name"] != "model.updated":
            continue
        decoded = orjson.loads(bytes(r["record"]))
        assert decoded["model"] == r["model"]
        out.append(decoded)
    return out


@contextmanager
def writes_one_update(d: Directory, name: str) -> Iterator[None]:
    before = counts(d)
    yield
    assert counts(d) == {
        **before,
        "change_feed": before["change_feed"] + 1,
        "audit_events": before["audit_events"] + 1,
    }
    feed = one(d, "SELECT entity, entity_id, op FROM change_feed ORDER BY seq DESC LIMIT 1")
    assert feed == {"entity": "model", "entity_id": model_row(d, name)["id"], "op": "update"}


@contextmanager
def refused(d: Directory, match: str, name: str | None = "gpt") -> Iterator[None]:
    before = counts(d)
    row = model_row(d, name) if name else None
    with pytest.raises(BadRequest, match=match):
        yield
    assert counts(d) == before
    if name:
        assert model_row(d, name) == row


def no_plaintext_anywhere(d: Directory, *secrets: str) -> None:
    """No audit row (any column) nor the change feed holds the secrets."""
    blob = repr(audit_rows(d)).encode() + b"".join(
        bytes(c) for r in audit_rows(d) for c in r.values() if isinstance(c, bytes | memoryview)
    )
    blob += b"".join(recorded(d))
    blob += repr(rows(d, "SELECT * FROM change_feed")).encode()
    for secret in secrets:
        assert secret.encode() not in blob


# ── each field ─────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("change", "field", "before", "after", "stored"),
    [
        (  # the same host (a new host drops the old credential: see the re-pointing tests below)
            {"upstream_url": "http://127.0.0.1:9/v2/"},
            "upstream_url",
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9/v2",
            "http://127.0.0.1:9/v2",
        ),
        ({"upstream_model": "up-large"}, "upstream_model", "up-small", "up-large", "up-large"),
        ({"api": UpstreamApi.ANTHROPIC}, "api", "openai", "anthropic", "anthropic"),
        (
            {"auth_style": AuthStyle.X_API_KEY},
            "auth_style",
            "bearer",
            "x-api-key",
            "x-api-key",
        ),
        ({"level": Level.CRITICAL}, "level", "internal", "critical", int(Level.CRITICAL)),
        (
            {"compartments": ["zulu", "alpha"]},
            "compartments",
            ["cyber"],
            ["alpha", "zulu"],
            '["alpha","zulu"]',
        ),
        ({"compartments": []}, "compartments", ["cyber"], [], "[]"),
    ],
    ids=["url", "upstream-model", "api", "auth-style", "level", "compartments", "no-compartments"],
)
def test_each_field_change_is_returned_stored_and_recorded(
    d: Directory,
    change: dict[str, Any],
    field: str,
    before: Any,
    after: Any,
    stored: Any,
) -> None:
    with writes_one_update(d, "gpt"):
        changes = d.update_model("gpt", now=NOW + 3, **change)
    assert changes == {field: [before, after]}
    assert model_row(d, "gpt")[field] == stored
    (event,) = updates(d)
    assert event["data"] == {"name": "gpt", "changes": changes}
    assert event["model"] == "gpt"
    assert event["actor"] == "test" and event["at"] == NOW + 3
    assert event["request_id"] is None


def test_several_fields_are_one_event(d: Directory) -> None:
    with writes_one_update(d, "gpt"):
        changes = d.update_model(
            "gpt",
            now=NOW,
            upstream_model="up-large",
            level=Level.RESTRICTED,
            compartments=["cyber", "finance"],
        )
    assert changes == {
        "upstream_model": ["up-small", "up-large"],
        "level": ["internal", "restricted"],
        "compartments": [["cyber"], ["cyber", "finance"]],
    }
    (event,) = updates(d)
    assert event["data"]["changes"] == changes


def test_model_can_be_named_by_id(d: Directory) -> None:
    model_id = model_row(d, "gpt")["id"]
    assert d.update_model(model_id, now=NOW, level=Level.PUBLIC) == {
        "level": ["internal", "public"]
    }
    assert updates(d)[0]["data"]["name"] == "gpt"


def test_the_change_is_in_the_snapshot(d: Directory, sealer: Sealer) -> None:
    d.update_model("gpt", now=NOW, upstream_model="up-large", level=Level.RESTRICTED)
    model = load_snapshot(d.engine, sealer).models["gpt"]
    assert model.upstream_model == "up-large" and model.level is Level.RESTRICTED


def test_origin_is_kept_in_the_event(d: Directory, initialized: Initialized) -> None:
    from garrison.keyring import load_pepper

    origin = {"via": "admin-api", "admin": "admin", "request_id": "req_model"}
    via_api = Directory(
        d.engine,
        actor="prn_admin",
        pepper=load_pepper(initialized.settings.key_dir),
        sealer=d.sealer,
        origin=origin,
    )
    changes = via_api.update_model("gpt", now=NOW, level=Level.PUBLIC)
    (event,) = updates(d)
    assert event["data"] == {"name": "gpt", "changes": changes, "origin": origin}
    assert event["request_id"] == "req_model" and event["actor"] == "prn_admin"


# ── the upstream credential ────────────────────────────────────────────────────────────────
def test_replacing_the_upstream_key_reseals_and_records_only_replaced(
    d: Directory, sealer: Sealer
) -> None:
    old_sealed = model_row(d, "gpt")["upstream_key_sealed"]
    with writes_one_update(d, "gpt"):
        changes = d.update_model("gpt", now=NOW, upstream_key=NEW_KEY)
    assert changes == {"upstream_key": "replaced"}
    new_sealed = model_row(d, "gpt")["upstream_key_sealed"]
    assert new_sealed is not None and new_sealed != old_sealed
    assert NEW_KEY.encode() not in new_sealed
    assert sealer.unseal(new_sealed).reveal() == NEW_KEY
    assert updates(d)[0]["data"]["changes"] == {"upstream_key": "replaced"}
    upstream_key = load_snapshot(d.engine, sealer).models["gpt"].upstream_key
    assert upstream_key is not None and upstream_key.reveal() == NEW_KEY
    no_plaintext_anywhere(d, OLD_KEY, NEW_KEY)


def test_replacing_with_the_same_key_still_reseals(d: Directory, sealer: Sealer) -> None:
    old_sealed = model_row(d, "gpt")["upstream_key_sealed"]
    assert d.update_model("gpt", now=NOW, upstream_key=OLD_KEY) == {"upstream_key": "replaced"}
    new_sealed = model_row(d, "gpt")["upstream_key_sealed"]
    assert new_sealed != old_sealed and sealer.unseal(new_sealed).reveal() == OLD_KEY
    no_plaintext_anywhere(d, OLD_KEY)


def test_removing_the_upstream_key(d: Directory, sealer: Sealer) -> None:
    with writes_one_update(d, "gpt"):
        changes = d.update_model("gpt", now=NOW, clear_upstream_key=True)
    assert changes == {"upstream_key": "removed"}
    assert model_row(d, "gpt")["upstream_key_sealed"] is None
    assert updates(d)[0]["data"]["changes"] == {"upstream_key": "removed"}
    assert load_snapshot(d.engine, sealer).models["gpt"].upstream_key is None
    no_plaintext_anywhere(d, OLD_KEY)


def test_adding_a_key_with_an_auth_style(d: Directory, sealer: Sealer) -> None:
    changes = d.update_model("local", now=NOW, upstream_key=NEW_KEY, auth_style=AuthStyle.BEARER)
    assert changes == {"auth_style": ["none", "bearer"], "upstream_key": "added"}
    sealed = model_row(d, "local")["upstream_key_sealed"]
    assert sealer.unseal(sealed).reveal() == NEW_KEY
    assert updates(d)[0]["data"]["changes"] == changes
    no_plaintext_anywhere(d, NEW_KEY)


def test_removing_the_key_and_auth_together(d: Directory) -> None:
    changes = d.update_model("gpt", now=NOW, auth_style=AuthStyle.NONE, clear_upstream_key=True)
    assert changes == {"auth_style": ["bearer", "none"], "upstream_key": "removed"}
    row = model_row(d, "gpt")
    assert row["auth_style"] == "none" and row["upstream_key_sealed"] is None


def test_removing_a_key_that_is_not_there_is_no_change(d: Directory) -> None:
    before = counts(d)
    assert d.update_model("local", now=NOW, clear_upstream_key=True) == {}
    assert counts(d) == before


def test_the_plaintext_never_reaches_the_audit_log_or_the_database(d: Directory) -> None:
    d.update_model("gpt", now=NOW, upstream_key=NEW_KEY)
    d.update_model("gpt", now=NOW, clear_upstream_key=True)
    d.update_model("local", now=NOW, auth_style=AuthStyle.X_API_KEY, upstream_key=NEW_KEY)
    no_plaintext_anywhere(d, OLD_KEY, NEW_KEY)
    raw = stored_bytes(d)
    assert b"model.updated" in raw  # the files read are the database
    assert NEW_KEY.encode() not in raw and OLD_KEY.encode() not in raw


# ── refusals ───────────────────────────────────────────────────────────────────────────────
def test_unknown_model_is_refused(d: Directory) -> None:
    with refused(d, "model 'ghost' does not exist", None):
        d.update_model("ghost", now=NOW, level=Level.PUBLIC)


def test_new_key_and_removal_together_are_refused(d: Directory) -> None:
    with refused(d, "give a new upstream key or remove it, not both"):
        d.update_model("gpt", now=NOW, upstream_key=NEW_KEY, clear_upstream_key=True)


def test_an_empty_upstream_key_is_refused(d: Directory) -> None:
    with refused(d, "the upstream key is empty"):
        d.update_model("gpt", now=NOW, upstream_key="")


def test_auth_none_while_a_key_stays_is_refused(d: Directory) -> None:
    with refused(d, "auth style 'none' with an upstream key: remove the key too"):
        d.update_model("gpt", now=NOW, auth_style=AuthStyle.NONE)


def test_a_key_for_a_model_with_auth_none_is_refused(d: Directory) -> None:
    with refused(d, "auth style 'none' with an upstream key", "local"):
        d.update_model("local", now=NOW, upstream_key=NEW_KEY)


def test_auth_none_with_a_new_key_is_refused(d: Directory) -> None:
    with refused(d, "auth style 'none' with an upstream key"):
        d.update_model("gpt", now=NOW, auth_style=AuthStyle.NONE, upstream_key=NEW_KEY)


@pytest.mark.parametrize(
    "url", ["ftp://x/v1", "http:///v1", "http://user:pw@host/v1", "http://h/v1?x=1", "notaurl"]
)
def test_bad_url_is_refused(d: Directory, url: str) -> None:
    with refused(d, "upstream URL"):
        d.update_model("gpt", now=NOW, upstream_url=url)


@pytest.mark.parametrize("name", ["bad name", "-lead", "x" * 201])
def test_bad_upstream_model_name_is_refused(d: Directory, name: str) -> None:
    with refused(d, "upstream model name"):
        d.update_model("gpt", now=NOW, upstream_model=name)


def test_bad_compartment_is_refused(d: Directory) -> None:
    with refused(d, "invalid compartment"):
        d.update_model("gpt", now=NOW, compartments=["Cyber Ops"])


def test_a_refused_change_leaves_the_other_fields_alone(d: Directory) -> None:
    with refused(d, "auth style 'none'"):
        d.update_model(
            "gpt", now=NOW, level=Level.PUBLIC, upstream_model="x", auth_style=AuthStyle.NONE
        )
    assert updates(d) == []


# ── no-op ──────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "change",
    [
        {},
        {"upstream_url": "http://127.0.0.1:9/v1"},
        {"upstream_url": "http://127.0.0.1:9/v1/"},
        {"upstream_model": "up-small"},
        {"api": UpstreamApi.OPENAI},
        {"auth_style": AuthStyle.BEARER},
        {"level": Level.INTERNAL},
        {"compartments": ["cyber", "cyber"]},
        {
            "upstream_url": "http://127.0.0.1:9/v1",
            "upstream_model": "up-small",
            "api": UpstreamApi.OPENAI,
            "auth_style": AuthStyle.BEARER,
            "level": Level.INTERNAL,
            "compartments": ["cyber"],
        },
    ],
    ids=[
        "nothing",
        "same-url",
        "same-url-trailing-slash",
        "same-upstream-model",
        "same-api",
        "same-auth",
        "same-level",
        "same-compartments",
        "all-same",
    ],
)
def test_a_change_to_nothing_returns_empty_and_writes_nothing(
    d: Directory, change: dict[str, Any]
) -> None:
    before = counts(d)
    row = model_row(d, "gpt")
    assert d.update_model("gpt", now=NOW, **change) == {}
    assert counts(d) == before
    assert model_row(d, "gpt") == row
    assert updates(d) == []


def key_of(d: Directory, sealer: Sealer, name: str) -> str | None:
    sealed = row(d, "models", name)["upstream_key_sealed"]
    return None if sealed is None else sealer.unseal(sealed).reveal()


# ── re-pointing a model ────────────────────────────────────────────────────────────────────
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


def test_dry_run_of_a_re_pointing_reports_it_and_writes_nothing(staffed: Directory) -> None:
    with nothing_written(staffed, "models", "gpt"):
        changes = staffed.update_model("gpt", now=NOW, upstream_model="up-large", dry_run=True)
    assert changes == {"upstream_model": ["up-small", "up-large"]}
    assert model_change_is_sensitive(changes)


def test_a_new_host_without_a_new_key_drops_the_old_key(staffed: Directory, sealer: Sealer) -> None:
    assert key_of(staffed, sealer, "gpt") == OLD_KEY
    changes = staffed.update_model("gpt", now=NOW + 5, upstream_url="https://llm.example.net/v1")
    assert changes == {
        "upstream_url": [HERE, "https://llm.example.net/v1"],
        "upstream_key": "removed (new host)",
        "auth_style": ["bearer", "none"],
    }
    stored = row(staffed, "models", "gpt")
    assert stored["upstream_key_sealed"] is None
    assert stored["auth_style"] == "none"
    assert stored["upstream_url"] == "https://llm.example.net/v1"
    (event,) = events(staffed, "model.updated")
    assert event["data"] == {"name": "gpt", "changes": changes}
    assert event["at"] == NOW + 5
    assert OLD_KEY.encode() not in orjson.dumps(event)


def test_a_dry_run_to_a_new_host_says_the_key_goes(staffed: Directory, sealer: Sealer) -> None:
    with nothing_written(staffed, "models", "gpt"):
        changes = staffed.update_model(
            "gpt", now=NOW, upstream_url="http://10.9.9.9/v1", dry_run=True
        )
    assert changes["upstream_key"] == "removed (new host)"
    assert key_of(staffed, sealer, "gpt") == OLD_KEY


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:10/v1", "http://127.0.0.2:9/v1", "http://localhost:9/v1"],
    ids=["other-port", "other-address", "other-name"],
)
def test_any_other_host_or_port_is_a_new_host(staffed: Directory, url: str) -> None:
    changes = staffed.update_model("gpt", now=NOW, upstream_url=url)
    assert changes["upstream_key"] == "removed (new host)"
    assert row(staffed, "models", "gpt")["upstream_key_sealed"] is None


def test_the_same_host_keeps_its_key(staffed: Directory, sealer: Sealer) -> None:
    changes = staffed.update_model("gpt", now=NOW, upstream_url="http://127.0.0.1:9/v2/")
    assert changes == {"upstream_url": [HERE, "http://127.0.0.1:9/v2"]}
    assert key_of(staffed, sealer, "gpt") == OLD_KEY
    assert row(staffed, "models", "gpt")["auth_style"] == "bearer"


def test_a_new_host_with_a_new_key_gets_the_new_key(staffed: Directory, sealer: Sealer) -> None:
    changes = staffed.update_model(
        "gpt", now=NOW, upstream_url="https://llm.example.net/v1", upstream_key=NEW_KEY
    )
    assert changes == {
        "upstream_url": [HERE, "https://llm.example.net/v1"],
        "upstream_key": "replaced",
    }
    assert key_of(staffed, sealer, "gpt") == NEW_KEY
    assert row(staffed, "models", "gpt")["auth_style"] == "bearer"


def test_a_new_host_with_an_explicit_auth_style_keeps_that_style(staffed: Directory) -> None:
    changes = staffed.update_model(
        "gpt", now=NOW, upstream_url="https://llm.example.net/v1", auth_style=AuthStyle.X_API_KEY
    )
    assert changes["upstream_key"] == "removed (new host)"
    assert changes["auth_style"] == ["bearer", "x-api-key"]
    stored = row(staffed, "models", "gpt")
    assert stored["upstream_key_sealed"] is None and stored["auth_style"] == "x-api-key"


def test_a_new_host_for_a_keyless_model_changes_only_the_url(staffed: Directory) -> None:
    staffed.update_model("gpt", now=NOW, clear_upstream_key=True, auth_style=AuthStyle.NONE)
    changes = staffed.update_model("gpt", now=NOW + 1, upstream_url="https://llm.example.net/v1")
    assert changes == {"upstream_url": [HERE, "https://llm.example.net/v1"]}


# ── compare and set ────────────────────────────────────────────────────────────────────────
def test_model_raise_that_became_a_lowering_is_refused(staffed: Directory) -> None:
    preview = staffed.update_model("gpt", now=NOW, level=Level.RESTRICTED, dry_run=True)
    assert preview == {"level": ["internal", "restricted"]}
    assert not model_change_is_sensitive(preview)
    # Meanwhile the model was raised to critical: restricted is now a lowering.
    sql(staffed, "UPDATE models SET level = :v WHERE name = 'gpt'", v=int(Level.CRITICAL))
    with nothing_written(staffed, "models", "gpt"), pytest.raises(Conflict) as raised:
        staffed.update_model("gpt", now=NOW + 1, level=Level.RESTRICTED, forbid_sensitive=True)
    assert raised.value.status == 409
    assert events(staffed, "model.updated") == []


def test_model_compartment_addition_that_became_a_removal_is_refused(staffed: Directory) -> None:
    preview = staffed.update_model("gpt", now=NOW, compartments=["bio", "cyber"], dry_run=True)
    assert not model_change_is_sensitive(preview)
    sql(staffed, "UPDATE models SET compartments = '[\"cyber\",\"nuclear\"]' WHERE name = 'gpt'")
    with nothing_written(staffed, "models", "gpt"), pytest.raises(Conflict):
        staffed.update_model(
            "gpt", now=NOW + 1, compartments=["bio", "cyber"], forbid_sensitive=True
        )


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
    staffed: Directory, field: str, column: str, value: Any, meanwhile: str
) -> None:
    # Judged: setting the field to what it is (plus a harmless raise) — nothing sensitive.
    kw = {field: value, "level": Level.RESTRICTED}
    preview = staffed.update_model("gpt", now=NOW, dry_run=True, **kw)
    assert preview == {"level": ["internal", "restricted"]}
    # Meanwhile the model was re-pointed: the same request would now point it back.
    sql(staffed, f"UPDATE models SET {column} = :v WHERE name = 'gpt'", v=meanwhile)  # noqa: S608
    with nothing_written(staffed, "models", "gpt"), pytest.raises(Conflict):
        staffed.update_model("gpt", now=NOW + 1, forbid_sensitive=True, **kw)


def test_model_change_still_harmless_is_applied(staffed: Directory, sealer: Sealer) -> None:
    changes = staffed.update_model(
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
    assert key_of(staffed, sealer, "gpt") == NEW_KEY


def test_forbid_sensitive_refuses_a_re_pointing_outright(staffed: Directory) -> None:
    with nothing_written(staffed, "models", "gpt"), pytest.raises(Conflict):
        staffed.update_model("gpt", now=NOW, upstream_model="up-large", forbid_sensitive=True)
