"""Directory writes: validated before the transaction, one transaction each, audited."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from garrison.bootstrap import Initialized, open_directory
from garrison.domain import AuthStyle, Level, OrgKind, PrincipalKind, Status, UpstreamApi
from garrison.errors import BadRequest, Conflict
from garrison.identity import parse_key
from garrison.keyring import Sealer
from garrison.store import Directory, load_snapshot
from garrison.store.directory import KEY_MAX_LIFETIME_S
from tests.support.db import row_counts, stored_bytes

NOW = 1_800_000_000.0


@pytest.fixture
def directory(initialized: Initialized) -> Iterator[Directory]:
    d = open_directory(initialized.settings, actor="test")
    d.create_principal(
        "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    try:
        yield d
    finally:
        d.engine.dispose()


def _count(directory: Directory, table: str) -> int:
    return row_counts(directory)[table]


def _model(directory: Directory, name: str = "m", **kw: object) -> str:
    args: dict[str, object] = dict(
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="up",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        now=NOW,
    )
    args.update(kw)
    return directory.create_model(name, **args)  # type: ignore[arg-type]


def test_every_write_is_an_audit_event_naming_the_actor(directory: Directory) -> None:
    before = _count(directory, "audit_events")
    directory.create_org("research", OrgKind.INTERNAL, now=NOW)
    assert _count(directory, "audit_events") == before + 1
    assert _count(directory, "change_feed") >= 1


def test_duplicate_name_is_a_conflict_and_writes_nothing(directory: Directory) -> None:
    before = (_count(directory, "audit_events"), _count(directory, "change_feed"))
    with pytest.raises(Conflict, match="principal 'alice' already exists"):
        directory.create_principal(
            "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
        )
    assert (_count(directory, "audit_events"), _count(directory, "change_feed")) == before


def test_unknown_reference_is_refused_and_writes_nothing(directory: Directory) -> None:
    before = _count(directory, "audit_events")
    with pytest.raises(BadRequest, match="org 'nope' does not exist"):
        directory.create_principal(
            "zed", org="nope", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
        )
    with pytest.raises(BadRequest, match="principal 'ghost' does not exist"):
        directory.create_key("ghost", now=NOW)
    assert _count(directory, "audit_events") == before
    assert _count(directory, "credentials") == 0  # init makes no key (the admin enrolls)


@pytest.mark.parametrize("cidr", ["10.0.0.300/8", "10.0.0.1/8", "not-a-net", "10.0.0.0/33"])
def test_invalid_network_is_refused(directory: Directory, cidr: str) -> None:
    with pytest.raises(BadRequest, match="invalid network"):
        directory.create_key("alice", now=NOW, networks=[cidr])


def test_key_lifetime_is_capped(directory: Directory) -> None:
    with pytest.raises(BadRequest, match="maximum of 90 days"):
        directory.create_key("alice", now=NOW, expires_in=KEY_MAX_LIFETIME_S + 1)
    created = directory.create_key("alice", now=NOW)
    assert created.expires_at == NOW + KEY_MAX_LIFETIME_S


def test_disabled_principal_gets_no_key(directory: Directory) -> None:
    directory.set_principal_status("alice", Status.DISABLED, now=NOW)
    with pytest.raises(BadRequest, match="disabled"):
        directory.create_key("alice", now=NOW)


@pytest.mark.parametrize("name", ["", " ", "a" * 201, "bad name", "-lead", "semi;colon"])
def test_bad_names_are_refused(directory: Directory, name: str) -> None:
    with pytest.raises(BadRequest):
        directory.create_org(name, OrgKind.VENDOR, now=NOW)


@pytest.mark.parametrize(
    "url", ["ftp://x/v1", "http:///v1", "http://user:pw@host/v1", "http://h/v1?x=1", "notaurl"]
)
def test_bad_upstream_url_is_refused(directory: Directory, url: str) -> None:
    with pytest.raises(BadRequest, match="upstream URL"):
        _model(directory, upstream_url=url)


def test_bad_compartment_is_refused(directory: Directory) -> None:
    with pytest.raises(BadRequest, match="invalid compartment"):
        _model(directory, compartments=["Cyber Ops"])


def test_upstream_key_is_sealed_at_rest(directory: Directory) -> None:
    _model(directory, upstream_key="sk-very-secret-upstream-key")
    raw = stored_bytes(directory)
    assert b"model.created" in raw  # what was read is the database
    assert b"sk-very-secret-upstream-key" not in raw


def test_key_secret_is_not_stored(directory: Directory) -> None:
    created = directory.create_key("alice", now=NOW)
    parsed = parse_key(created.key.token.reveal())
    assert parsed is not None
    # (not rsplit("_"): base64url secrets may themselves contain "_")
    secret = parsed.secret.reveal().encode()
    raw = stored_bytes(directory)
    assert created.key.key_id.encode() in raw  # what was read is the database
    assert secret not in raw


def test_snapshot_reflects_writes_and_unseals_upstream_keys(
    directory: Directory, initialized: Initialized
) -> None:
    _model(directory, "gpt", upstream_key="sk-abc")
    key = directory.create_key("alice", now=NOW, networks=["10.0.0.0/8"])
    snap = load_snapshot(directory.engine, Sealer.from_dir(initialized.settings.key_dir))
    assert snap.models["gpt"].upstream_key is not None
    assert snap.models["gpt"].upstream_key.reveal() == "sk-abc"
    assert "sk-abc" not in repr(snap.models["gpt"])
    assert [str(n) for n in snap.credentials[key.key.key_id].networks] == ["10.0.0.0/8"]
    before = snap.version
    directory.revoke_key(key.key.key_id, now=NOW, reason="test")
    snap2 = load_snapshot(directory.engine, Sealer.from_dir(initialized.settings.key_dir))
    assert snap2.version > before
    assert snap2.credentials[key.key.key_id].revoked


def test_revoking_twice_is_a_conflict(directory: Directory) -> None:
    key = directory.create_key("alice", now=NOW)
    directory.revoke_key(key.key.key_id, now=NOW, reason="lost laptop")
    with pytest.raises(Conflict):
        directory.revoke_key(key.key.key_id, now=NOW, reason="again")


def test_reseal_rotates_every_upstream_key(directory: Directory, initialized: Initialized) -> None:
    from garrison.keyring import add_seal_key

    _model(directory, "a", upstream_key="sk-one")
    key_dir = initialized.settings.key_dir
    add_seal_key(key_dir)
    count = directory.reseal_upstream_keys(Sealer.from_dir(key_dir), now=time.time())
    assert count == 1
    # Drop the old key: the resealed value must open with the new key alone.
    newest = (key_dir / "seal.keys").read_text().splitlines()[0]
    snap = load_snapshot(directory.engine, Sealer([newest]))
    assert snap.models["a"].upstream_key is not None
    assert snap.models["a"].upstream_key.reveal() == "sk-one"
