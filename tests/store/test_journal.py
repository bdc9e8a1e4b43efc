"""The writer's context: store modules write with a ``Journal`` (a ``Directory`` is one), and
every write's audit event names the journal's actor and origin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from garrison.audit.events import EventName
from garrison.audit.payloads_directory import SealKeyRotated
from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind
from garrison.errors import BadRequest
from garrison.store import Directory, journal, keys, principals
from garrison.store.audit_rows import audit_rows
from garrison.store.journal import Journal

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


def _records(d: Journal, name: str) -> list[dict[str, Any]]:
    rows = audit_rows()
    with d.engine.connect() as conn:
        found = conn.execute(sa.select(rows.c.record).where(rows.c.name == name)).all()
    return [orjson.loads(r.record) for r in found]


def test_a_store_module_writes_with_a_bare_journal(directory: Directory) -> None:
    journal = Journal(
        directory.engine,
        actor="ops",
        pepper=directory.pepper,
        sealer=directory.sealer,
        origin={"request_id": "req-1"},
    )
    created = keys.create_key(journal, "alice", now=NOW)
    (event,) = [
        e
        for e in _records(directory, "credential.created")
        if e["credential_id"] == created.key.key_id
    ]
    assert event["actor"] == "ops"
    assert event["request_id"] == "req-1"
    assert event["data"]["origin"] == {"request_id": "req-1"}
    assert event["data"]["created_by"] == "ops"


def test_acting_keeps_the_database_and_secrets_and_changes_who_writes(
    directory: Directory,
) -> None:
    other = directory.acting("prn_0000000000000000", {"via": "enroll"})
    assert other.engine is directory.engine
    assert other.pepper == directory.pepper and other.sealer is directory.sealer
    assert (other.actor, other.origin) == ("prn_0000000000000000", {"via": "enroll"})
    assert (directory.actor, directory.origin) == ("test", None)


def test_a_refused_write_records_nothing(directory: Directory) -> None:
    before = len(_records(directory, "principal.created"))
    with pytest.raises(BadRequest, match="rule service-roles"):
        principals.create_principal(
            directory,
            "svc",
            org="internal",
            kind=PrincipalKind.SERVICE,
            clearance=Level.INTERNAL,
            roles=["auditor"],
            now=NOW,
        )
    assert len(_records(directory, "principal.created")) == before


def test_record_takes_a_payload_or_a_name_and_data_never_both(directory: Directory) -> None:
    common: dict[str, Any] = {"at": NOW, "actor": "ops", "entity": "keys", "entity_id": "seal"}
    with directory.engine.connect() as conn:
        with pytest.raises(TypeError, match="not both"):
            journal.record(
                conn,
                op="rotate",
                payload=SealKeyRotated(resealed=1),
                name=EventName.SEAL_KEY_ROTATED,
                **common,
            )
        with pytest.raises(TypeError, match="needs a payload"):
            journal.record(conn, op="rotate", name=EventName.SEAL_KEY_ROTATED, **common)
