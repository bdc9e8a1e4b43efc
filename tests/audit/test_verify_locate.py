"""Locating a record changed together with its stored leaf hash, on the pure verifier: the
witness's leaf hashes name it exactly when they rebuild the signed root, and ``MAX_LOCATED``
bounds how many are named one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from garrison.audit import AuditEvent, EventName, verify  # verify: the module (MAX_LOCATED)
from garrison.audit.checkpoint import GENESIS_PREV, Checkpoint, Signer, create_signing_key
from garrison.audit.merkle import CompactTree, leaf_hash
from garrison.audit.verify import VerifyReport, verify_log

EVENTS = 40
SIGNED_AT = (16, 29, 40)  # checkpoint sizes: ranges [0,16), [16,29), [29,40)


def _log(
    tmp_path: Path,
) -> tuple[list[bytes], list[Checkpoint], dict[str, Ed25519PublicKey], bytes]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    create_signing_key(keys)
    signer = Signer.from_dir(keys)
    records = [
        AuditEvent(EventName.REQUEST_DENIED, at=1.0, request_id=f"r{i}").encode(i)
        for i in range(EVENTS)
    ]
    tree = CompactTree()
    checkpoints: list[Checkpoint] = []
    prev = GENESIS_PREV
    for i, record in enumerate(records):
        tree.append(leaf_hash(record))
        if i + 1 in SIGNED_AT:
            cp = signer.sign(tree.size, tree.root(), 1.0, prev)
            checkpoints.append(cp)
            prev = cp.digest()
    leaves = b"".join(leaf_hash(r) for r in records)
    return records, checkpoints, signer.public_keys(), leaves


def _forge(records: list[bytes], index: int) -> None:
    records[index] = records[index].replace(b'"r', b'"x', 1)


def _run(
    records: list[bytes],
    checkpoints: list[Checkpoint],
    keys: dict[str, Ed25519PublicKey],
    leaves: bytes | None,
) -> VerifyReport:
    rows = [(i + 1, r, leaf_hash(r)) for i, r in enumerate(records)]  # hashes recomputed
    return verify_log(
        iter(rows),
        checkpoints,
        keys,
        reread=lambda a, b: rows[a:b],
        leaves=None if leaves is None else (lambda a, b: leaves[32 * a : 32 * b]),
    )


@pytest.mark.parametrize("index", [0, 15, 16, 17, 22, 28, 29, 39])
def test_each_position_is_named(tmp_path: Path, index: int) -> None:
    records, checkpoints, keys, leaves = _log(tmp_path)
    _forge(records, index)
    report = _run(records, checkpoints, keys, leaves)
    assert [(p.kind, p.index, p.end) for p in report.problems] == [("modified", index, None)]


def test_without_witness_leaves_the_signed_range_is_named(tmp_path: Path) -> None:
    records, checkpoints, keys, _ = _log(tmp_path)
    _forge(records, 22)
    report = _run(records, checkpoints, keys, None)
    assert [(p.kind, p.index, p.end) for p in report.problems] == [("modified", 16, 29)]


def test_leaves_that_do_not_rebuild_the_signed_root_are_not_believed(tmp_path: Path) -> None:
    records, checkpoints, keys, leaves = _log(tmp_path)
    _forge(records, 22)
    forged = bytearray(leaves)
    forged[32 * 22 : 32 * 23] = leaf_hash(records[22])  # the insider edits the copy too
    report = _run(records, checkpoints, keys, bytes(forged))
    assert [(p.kind, p.index, p.end) for p in report.problems] == [("modified", 16, 29)]


def test_past_max_located_the_rest_is_one_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "MAX_LOCATED", 2)
    records, checkpoints, keys, leaves = _log(tmp_path)
    for index in (17, 19, 21, 23):
        _forge(records, index)
    report = _run(records, checkpoints, keys, leaves)
    found = [(p.kind, p.index, p.end) for p in report.problems]
    assert found == [("modified", 17, None), ("modified", 19, None), ("modified", 21, 29)]
    assert "2 more changed record(s)" in report.problems[-1].detail
