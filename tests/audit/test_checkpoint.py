"""Signed checkpoints: Ed25519 signatures, key ids, rotation, and malformed input."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from garrison.audit.checkpoint import (
    GENESIS_PREV,
    SIGNING_FILE,
    Checkpoint,
    CheckpointError,
    Signer,
    create_signing_key,
    key_id_of,
    load_public_b64,
    public_b64,
    rotate_signing_key,
    verify_checkpoint,
)

ROOT = hashlib.sha256(b"some root").digest()


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    create_signing_key(path)
    return path


def sign(key_dir: Path, size: int = 10, prev: str = GENESIS_PREV) -> Checkpoint:
    return Signer.from_dir(key_dir).sign(size, ROOT, 1700000000.25, prev)


def test_signed_checkpoint_verifies_with_the_signers_public_key(key_dir: Path) -> None:
    signer = Signer.from_dir(key_dir)
    cp = signer.sign(10, ROOT, 1700000000.25, GENESIS_PREV)
    verify_checkpoint(cp, signer.public_keys())
    assert (cp.tree_size, cp.root, cp.key_id) == (10, ROOT.hex(), signer.key_id)


def test_checkpoint_survives_a_round_trip_through_its_dict(key_dir: Path) -> None:
    signer = Signer.from_dir(key_dir)
    cp = signer.sign(10, ROOT, 1700000000.25, GENESIS_PREV)
    again = Checkpoint.from_dict(cp.to_dict())
    assert again == cp
    verify_checkpoint(again, signer.public_keys())


def test_bad_signature_is_rejected(key_dir: Path) -> None:
    signer = Signer.from_dir(key_dir)
    cp = signer.sign(10, ROOT, 1700000000.25, GENESIS_PREV)
    forged = Ed25519PrivateKey.generate().sign(cp.body())
    bad = dataclasses.replace(cp, signature=base64.b64encode(forged).decode())
    with pytest.raises(CheckpointError, match="bad signature"):
        verify_checkpoint(bad, signer.public_keys())


def test_signature_that_is_not_base64_is_rejected(key_dir: Path) -> None:
    signer = Signer.from_dir(key_dir)
    cp = dataclasses.replace(sign(key_dir), signature="not base64 at all!")
    with pytest.raises(CheckpointError):
        verify_checkpoint(cp, signer.public_keys())


def test_checkpoint_signed_by_an_unknown_key_is_rejected(key_dir: Path, tmp_path: Path) -> None:
    other_dir = tmp_path / "other-keys"
    create_signing_key(other_dir)
    cp = sign(other_dir)
    with pytest.raises(CheckpointError, match="unknown key"):
        verify_checkpoint(cp, Signer.from_dir(key_dir).public_keys())


def test_checkpoint_naming_another_known_key_is_rejected(key_dir: Path) -> None:
    # The signature is good, but under a different key than the one the checkpoint names.
    old_id = Signer.from_dir(key_dir).key_id
    rotate_signing_key(key_dir)
    signer = Signer.from_dir(key_dir)
    cp = dataclasses.replace(signer.sign(10, ROOT, 1.0, GENESIS_PREV), key_id=old_id)
    with pytest.raises(CheckpointError):
        verify_checkpoint(cp, signer.public_keys())


@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": 11},
        {"root": hashlib.sha256(b"other root").hexdigest()},
        {"at": 1700000001.25},
        {"prev": "1" * 64},
    ],
    ids=["tree_size", "root", "at", "prev"],
)
def test_tampered_field_fails_verification(key_dir: Path, change: dict[str, object]) -> None:
    cp = dataclasses.replace(sign(key_dir), **change)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError):
        verify_checkpoint(cp, Signer.from_dir(key_dir).public_keys())


def test_old_checkpoints_still_verify_after_rotation(key_dir: Path) -> None:
    before = sign(key_dir)
    rotate_signing_key(key_dir)
    verify_checkpoint(before, Signer.from_dir(key_dir).public_keys())


def test_new_checkpoints_name_the_new_key_after_rotation(key_dir: Path) -> None:
    old = Signer.from_dir(key_dir).key_id
    new_id = rotate_signing_key(key_dir)
    signer = Signer.from_dir(key_dir)
    cp = signer.sign(20, ROOT, 2.0, GENESIS_PREV)
    assert new_id != old
    assert signer.key_id == new_id == cp.key_id
    assert set(signer.public_keys()) == {old, new_id}
    verify_checkpoint(cp, signer.public_keys())


def test_checkpoint_of_a_rotated_key_does_not_verify_with_only_the_old_key(key_dir: Path) -> None:
    old_keys = Signer.from_dir(key_dir).public_keys()
    rotate_signing_key(key_dir)
    with pytest.raises(CheckpointError, match="unknown key"):
        verify_checkpoint(sign(key_dir), old_keys)


def test_digest_covers_the_signature(key_dir: Path) -> None:
    cp = sign(key_dir)
    other = dataclasses.replace(cp, signature=cp.signature[::-1])
    assert cp.digest() != other.digest()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"tree_size": 1, "root": "ab", "at": 1.0, "prev": GENESIS_PREV, "key_id": "k"},
        {
            "tree_size": "many",
            "root": "ab",
            "at": 1.0,
            "prev": GENESIS_PREV,
            "key_id": "k",
            "signature": "",
        },
        {
            "tree_size": 1,
            "root": "ab",
            "at": None,
            "prev": GENESIS_PREV,
            "key_id": "k",
            "signature": "",
        },
    ],
    ids=["empty", "no-signature", "size-not-a-number", "time-is-null"],
)
def test_malformed_checkpoint_dict_raises_checkpoint_error(data: dict[str, object]) -> None:
    with pytest.raises(CheckpointError, match="malformed"):
        Checkpoint.from_dict(data)


def test_signing_key_file_is_owner_only(key_dir: Path) -> None:
    assert stat.S_IMODE((key_dir / SIGNING_FILE).stat().st_mode) == 0o600


def test_signing_key_file_stays_owner_only_after_rotation(key_dir: Path) -> None:
    rotate_signing_key(key_dir)
    assert stat.S_IMODE((key_dir / SIGNING_FILE).stat().st_mode) == 0o600


def test_exported_public_key_loads_back_with_the_same_key_id(key_dir: Path) -> None:
    for kid, key in Signer.from_dir(key_dir).public_keys().items():
        assert key_id_of(load_public_b64(public_b64(key))) == kid


def test_garbage_public_key_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError):
        load_public_b64("definitely not a key")


# Signing-key rotations run at once (two operators on one key directory).
ROTATORS = 4


def test_rotations_at_once_keep_every_new_signing_key(key_dir: Path) -> None:
    """Each rotation's key stays in the file: one dropped by a racing rotation would leave
    the checkpoints a process signed with it unverifiable."""
    before = set(Signer.from_dir(key_dir).public_keys())
    start = threading.Barrier(ROTATORS)
    kids: list[str] = []

    def rotate() -> None:
        start.wait(10)
        kids.append(rotate_signing_key(key_dir))

    threads = [threading.Thread(target=rotate) for _ in range(ROTATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(kids) == ROTATORS
    assert set(Signer.from_dir(key_dir).public_keys()) == before | set(kids)
