"""The caller's address under both encoding versions: version 1 named it ``address`` outside
the data plane, version 2 names it ``client_address`` everywhere. A record of each version
reads the same in every reader (detectors, the CLI's log view, the stored-record queries of
reports and incidents, the enrollment inviter check), and ``verify`` passes over one log
that holds both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from garrison.audit import CLIENT_ADDRESS, AuditEvent, EventName, caller_address, events
from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.parallel_verify import verify_parallel
from garrison.audit.sqlite_reader import AuditReader
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.verify import verify_log
from garrison.audit.witness import DirectoryWitness, read_witness
from garrison.cli.audit_cmds import _line
from garrison.detect.observation import Obs
from garrison.store import make_engine, migrate, schema
from garrison.store.enrollment import _inviter_addresses
from garrison.store.queries import caller_address_sql

ADMIN = "prn_admin"
AT = 1_800_000_000.0


def address(n: int) -> str:
    """Each record its own address, so a reader that skips one version is seen."""
    return f"198.51.100.{n + 1}"


ALL = [address(n) for n in range(6)]


def _admin_denied(version: int, n: int) -> AuditEvent:
    """An admin refusal as the given version wrote it."""
    key = "address" if version == 1 else CLIENT_ADDRESS
    return AuditEvent(
        EventName.ADMIN_DENIED,
        at=AT + n,
        actor=ADMIN,
        request_id=f"req_v{version}_{n}",
        principal_id=ADMIN,
        data={"method": "POST", "path": "/admin/v1/locks", key: address(n), "status": 403},
    )


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Signer, Path]]:
    """One SQLite log: three version-1 records, a checkpoint, three version-2 records and a
    final checkpoint, written by the real sink."""
    db = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    signer = Signer.from_dir(keys)
    witness = tmp_path / "witness"
    sink = SqliteAuditSink(
        db, signer=signer, witness=DirectoryWitness(witness), monotonic=lambda: 0.0
    )
    sink.open()
    with monkeypatch.context() as old:
        old.setattr(events, "ENCODING_VERSION", 1)  # what a gateway before the bump wrote
        sink.write_batch([_admin_denied(1, n) for n in range(3)])
    sink.checkpoint()
    sink.write_batch([_admin_denied(2, n) for n in range(3, 6)])
    sink.checkpoint()
    sink.close()
    yield db, signer, witness


def _records(db: Path) -> list[bytes]:
    with AuditReader(db) as reader:
        return [bytes(r[1]) for r in reader.rows()]


def test_the_log_holds_both_versions(log: tuple[Path, Signer, Path]) -> None:
    decoded = [orjson.loads(r) for r in _records(log[0])]
    assert [d["v"] for d in decoded] == [1, 1, 1, 2, 2, 2]
    assert events.ENCODING_VERSION == 2
    assert all("address" in d["data"] for d in decoded[:3])
    assert all(CLIENT_ADDRESS in d["data"] for d in decoded[3:])


def test_verify_passes_over_a_log_with_both_versions(log: tuple[Path, Signer, Path]) -> None:
    db, signer, witness = log
    keys = signer.public_keys()
    with AuditReader(db) as reader:
        checkpoints = reader.checkpoints()
        report = verify_log(reader.rows(), checkpoints, keys, witness=read_witness(witness))
    assert report.ok, report.problems
    assert report.events == 6
    fast = verify_parallel(db, 6, checkpoints, keys, witness=read_witness(witness), jobs=1)
    assert fast is not None and fast.ok and fast.root == report.root


def test_detectors_read_both_versions_alike(log: tuple[Path, Signer, Path]) -> None:
    seen = [Obs.from_record(orjson.loads(r)) for r in _records(log[0])]
    assert [o.address for o in seen] == ALL
    live = [Obs.from_event(0, _admin_denied(v, 0)) for v in (1, 2)]
    assert [o.address for o in live] == [address(0), address(0)]


def test_the_cli_log_view_shows_both_versions_alike(log: tuple[Path, Signer, Path]) -> None:
    lines = [_line(i + 1, r, {}) for i, r in enumerate(_records(log[0]))]
    for n, line in enumerate(lines):
        assert f"client_address={address(n)}" in line, line


def test_stored_record_queries_read_both_versions(log: tuple[Path, Signer, Path]) -> None:
    """The SQL the key-usage report and the incident report's "others from the same
    sources" use, and the enrollment inviter check."""
    engine = make_engine(f"sqlite:///{log[0]}")
    a = schema.audit_events
    try:
        with engine.connect() as conn:
            got = conn.execute(sa.select(caller_address_sql(a.c.record)).order_by(a.c.seq))
            assert [r[0] for r in got] == ALL
            assert _inviter_addresses(conn, ADMIN, AT + 10) == set(ALL)
    finally:
        engine.dispose()


def test_a_version_1_origin_reads_like_a_version_2_one() -> None:
    old = {"via": "admin-api", "address": address(0)}
    new = {"via": "admin-api", CLIENT_ADDRESS: address(0)}
    assert caller_address(old) == caller_address(new) == address(0)
    assert caller_address({}) is None
