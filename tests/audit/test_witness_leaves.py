"""The witness's copy of the leaf hashes: written in place (idempotent, a torn tail is
overwritten), read back by range, and caught up in chunks on a log that predates it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from garrison.audit import AuditEvent, EventName, SqliteAuditSink, tree_sink
from garrison.audit.checkpoint import Signer, create_signing_key
from garrison.audit.witness import LEAVES, DirectoryWitness, read_leaves
from garrison.store import make_engine, migrate


def _h(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def test_leaves_are_written_in_place_and_read_by_range(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path / "w")
    witness.publish_leaves(0, b"".join(_h(i) for i in range(3)))
    witness.publish_leaves(1, b"".join(_h(i) for i in range(1, 5)))  # overlap: same bytes
    assert witness.leaf_count() == 5
    assert read_leaves(tmp_path / "w", 2, 4) == _h(2) + _h(3)
    assert read_leaves(tmp_path / "w", 4, 9) == _h(4)  # shorter where it holds fewer
    assert read_leaves(tmp_path / "nowhere", 0, 2) == b""


def test_a_torn_last_hash_is_not_counted_and_is_overwritten(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path / "w")
    witness.publish_leaves(0, _h(0) + _h(1))
    with open(tmp_path / "w" / LEAVES, "ab") as f:
        f.write(_h(2)[:10])  # a write cut short by a full disk
    assert witness.leaf_count() == 2
    assert read_leaves(tmp_path / "w", 0, 3) == _h(0) + _h(1)
    witness.publish_leaves(2, _h(2) + _h(3))
    assert read_leaves(tmp_path / "w", 0, 4) == b"".join(_h(i) for i in range(4))


def test_a_witness_added_to_an_existing_log_catches_up_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    plain = SqliteAuditSink(path)  # no witness yet
    plain.open()
    plain.write_batch(
        [AuditEvent(EventName.REQUEST_DENIED, at=1.0, request_id=f"r{i}") for i in range(10)]
    )
    plain.close()
    monkeypatch.setattr(tree_sink, "WITNESS_LEAVES_CHUNK", 3)
    witness = DirectoryWitness(tmp_path / "w")
    sink = SqliteAuditSink(path, signer=Signer.from_dir(keys), witness=witness)
    sink.open()
    sink.close()  # the final checkpoint publishes the leaves the witness lacks
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT leaf_hash FROM audit_events ORDER BY seq")
        stored = b"".join(r[0] for r in rows)
    finally:
        conn.close()
    assert len(stored) == 32 * 10
    assert (tmp_path / "w" / LEAVES).read_bytes() == stored
