"""The multi-process fast path agrees with the sequential verifier, and steps aside on damage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from garrison.audit import AuditEvent, EventName
from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.parallel_verify import CHUNK, verify_parallel
from garrison.audit.sqlite_reader import AuditReader
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.verify import verify_log
from garrison.audit.witness import DirectoryWitness, read_witness
from garrison.store import make_engine, migrate

# Two whole chunks and a tail, with checkpoints inside chunks, on boundaries and at the end.
EVENTS = 2 * CHUNK + 1234
CHECKPOINT_AT = (1000, CHUNK, CHUNK + 77, 2 * CHUNK, EVENTS)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer, Path]:
    root = tmp_path_factory.mktemp("plog")
    db = root / "audit.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    signer = Signer.from_dir(keys)
    witness = root / "witness"
    # A clock that never moves: checkpoints happen exactly where the test asks, however slow
    # the machine (a real one would add periodic checkpoints under load).
    sink = SqliteAuditSink(
        db, signer=signer, witness=DirectoryWitness(witness), monotonic=lambda: 0.0
    )
    sink.open()
    written = 0
    for size in CHECKPOINT_AT:
        batch = [
            AuditEvent(EventName.REQUEST_ALLOWED, at=float(i), request_id=f"r{i}", data={"n": i})
            for i in range(written, size)
        ]
        for start in range(0, len(batch), 5000):
            sink.write_batch(batch[start : start + 5000])
        sink.checkpoint()
        written = size
    sink.close()
    return db, signer, witness


def _copy(db: Path, to: Path) -> Path:
    src = sqlite3.connect(db)
    dst = sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()
    return to


def _checkpoints(db: Path) -> list:  # type: ignore[type-arg]
    with AuditReader(db) as reader:
        return reader.checkpoints()


def test_parallel_and_sequential_give_the_same_report(log: tuple[Path, Signer, Path]) -> None:
    db, signer, witness = log
    keys = signer.public_keys()
    cps = _checkpoints(db)
    fast = verify_parallel(db, EVENTS, cps, keys, witness=read_witness(witness), jobs=2)
    with AuditReader(db) as reader:
        slow = verify_log(reader.rows(), cps, keys, witness=read_witness(witness))
    assert fast is not None and slow.ok
    assert (fast.events, fast.root, fast.ok) == (slow.events, slow.root, True)
    assert [cp.tree_size for cp in cps] == list(CHECKPOINT_AT)


def test_parallel_path_steps_aside_on_a_modified_record(
    log: tuple[Path, Signer, Path], tmp_path: Path
) -> None:
    db, signer, _ = log
    copy = _copy(db, tmp_path / "copy.db")
    dst = sqlite3.connect(copy)
    dst.execute(
        "UPDATE audit_events SET record = replace(record, '\"n\":40000', '\"n\":40001')"
        " WHERE seq = 40001"
    )
    dst.commit()
    dst.close()
    assert verify_parallel(copy, EVENTS, _checkpoints(copy), signer.public_keys(), jobs=2) is None


def test_sequential_verifier_reports_a_record_rewritten_as_text(
    log: tuple[Path, Signer, Path], tmp_path: Path
) -> None:
    db, signer, _ = log
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    # SQLite's replace() turns the BLOB into TEXT: the verifier must report, not crash.
    dst.execute(
        "UPDATE audit_events SET record = replace(record, '\"n\":500', '\"n\":501') WHERE seq = 501"
    )
    dst.commit()
    dst.close()
    with AuditReader(copy) as reader:
        report = verify_log(reader.rows(), reader.checkpoints(), signer.public_keys())
    assert not report.ok
    assert (report.problems[0].kind, report.first_bad_index) == ("modified", 500)


def test_parallel_path_steps_aside_on_a_rewritten_copied_column(
    log: tuple[Path, Signer, Path], tmp_path: Path
) -> None:
    db, signer, _ = log
    copy = _copy(db, tmp_path / "copy.db")
    dst = sqlite3.connect(copy)
    dst.execute("UPDATE audit_events SET request_id = 'elsewhere' WHERE seq = 40001")
    dst.commit()
    dst.close()
    keys = signer.public_keys()
    assert verify_parallel(copy, EVENTS, _checkpoints(copy), keys, jobs=2) is None
    with AuditReader(copy) as reader:
        report = verify_log(reader.indexed_rows(), reader.checkpoints(), keys)
    assert [(p.kind, p.index) for p in report.problems] == [("column_mismatch", 40000)]
