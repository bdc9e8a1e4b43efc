"""Red team (issue 17, the portable JSON path helpers): on PostgreSQL a stored record is cast
to ``jsonb`` to read a field, and ``jsonb`` refuses the escape ``\\u0000`` that JSON (and
SQLite) allow. One event anywhere in the scanned range holding a NUL in any string (a field
copied from a caller, an identity provider or an upstream) made every incident timeline over
that range fail on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from garrison.audit.events import AuditEvent, EventName
from garrison.bootstrap import Initialized, open_directory
from garrison.domain import Level, PrincipalKind
from garrison.store import Directory
from garrison.store.incidents import timeline
from tests.support import db

NOW = 1_800_000_000.0


@pytest.fixture
def d(initialized: Initialized) -> Iterator[Directory]:
    dr = open_directory(initialized.settings, actor="test")
    dr.create_principal(
        "alice", org="internal", kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=NOW
    )
    yield dr


def test_a_nul_in_one_record_leaves_incident_timelines_readable(d: Directory) -> None:
    since = NOW + 100
    alice = db.row(d, "principals", "alice")["id"]
    db.write_events(
        d,
        [
            # Someone else's event, in the range: the query reads its actor field.
            AuditEvent(
                EventName.REQUEST_DENIED,
                at=since + 1,
                actor="prn_someone_else",
                data={"note": "before\x00after"},
            ),
            AuditEvent(EventName.REQUEST_DENIED, at=since + 1.5, actor=alice, principal_id=alice),
            AuditEvent(EventName.REQUEST_DENIED, at=since + 2, actor=alice, principal_id=alice),
        ],
    )
    inc = d.open_incident("t", now=since + 10, since=since, principals=["alice"])
    db.integrate(d)
    with d.engine.connect() as conn:
        got = [orjson.loads(r) for _, r in timeline(conn, inc)]
    assert [(e["name"], e["at"]) for e in got] == [
        ("request.denied", since + 1.5),
        ("request.denied", since + 2),
    ]
