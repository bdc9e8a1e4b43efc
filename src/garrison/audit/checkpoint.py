"""Signed checkpoints: tree size, root, time, the previous checkpoint's hash and a key id,
signed with Ed25519. Several verification keys may exist (rotation); each checkpoint names
the key that signed it.

The signing keys live in ``keys/audit-signing.keys`` (0600), newest first, one per line as
``<key id> <hex private key>``; the key id is the first 16 hex digits of SHA-256 of the raw
public key. ``verify_checkpoint`` raises ``CheckpointError``; it never returns False.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from garrison.errors import ConfigError
from garrison.keyring import read_secret_file, update_secret_file, write_secret_file

SIGNING_FILE = "audit-signing.keys"
CHECKPOINT_VERSION = 1
GENESIS_PREV = "0" * 64
# Checkpoints are signed at least this often while events flow (and at clean shutdown):
# what a crash or a rewrite could leave unsigned is at most one second of events.
CHECKPOINT_INTERVAL_S = 1.0
# The largest tree size a checkpoint may name: what the signed body's JSON integer can hold.
MAX_SIZE = 2**63 - 1


class CheckpointError(Exception):
    """A checkpoint's signature, key or form is wrong."""


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def fingerprint_of(public: Ed25519PublicKey) -> str:
    """The whole SHA-256 of the raw public key (the key id is its first 16 hex digits): what
    a verifier compares with the fingerprint it obtained independently of any bundle."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def public_b64(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_public_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise CheckpointError(f"not an Ed25519 public key: {exc}") from None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tree_size: int
    root: str  # hex
    at: float
    prev: str  # hex SHA-256 of the previous checkpoint's signed body, or GENESIS_PREV
    key_id: str
    signature: str = ""  # base64 Ed25519 over ``body()``
    # Why a stored checkpoint could not be read ("": it could); such a one never verifies.
    damage: str = ""

    def body(self) -> bytes:
        """The signed bytes: every field but the signature, keys sorted."""
        fields = self.to_dict()
        del fields["signature"]
        return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)

    def digest(self) -> str:
        """What the next checkpoint names as ``prev``."""
        return hashlib.sha256(self.body() + self.signature.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CHECKPOINT_VERSION,
            "tree_size": self.tree_size,
            "root": self.root,
            "at": self.at,
            "prev": self.prev,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        try:
            size = data["tree_size"]
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
                raise ValueError(f"tree_size {str(size)[:40]} is not a tree size")
            return cls(
                tree_size=size,
                root=str(data["root"]),
                at=float(data["at"]),
                prev=str(data["prev"]),
                key_id=str(data["key_id"]),
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"malformed checkpoint: {exc}") from None

    @classmethod
    def damaged(cls, why: str) -> Checkpoint:
        """A stand-in for a stored checkpoint that is not one: it fails verification with
        ``why`` (a finding, never a crash), and breaks the chain after it."""
        return cls(tree_size=0, root="", at=0.0, prev="", key_id="", damage=why)


class Signer:
    """The newest signing key signs; all keys' public halves verify."""

    def __init__(self, keys: list[Ed25519PrivateKey]) -> None:
        if not keys:
            raise ConfigError("no audit signing keys")
        self._keys = keys
        self.key_id = key_id_of(keys[0].public_key())

    @classmethod
    def from_dir(cls, key_dir: Path) -> Signer:
        keys = []
        for line in read_secret_file(key_dir / SIGNING_FILE).splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            try:
                keys.append(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(parts[1])))
            except ValueError:
                raise ConfigError(f"{key_dir / SIGNING_FILE}: unreadable key {parts[0]}") from None
        return cls(keys)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {key_id_of(k.public_key()): k.public_key() for k in self._keys}

    def sign(self, tree_size: int, root: bytes, at: float, prev: str) -> Checkpoint:
        unsigned = Checkpoint(tree_size, root.hex(), at, prev, self.key_id)
        signature = self._keys[0].sign(unsigned.body())
        return Checkpoint(
            tree_size, root.hex(), at, prev, self.key_id, base64.b64encode(signature).decode()
        )


def _line(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return f"{key_id_of(key.public_key())} {raw.hex()}"


def create_signing_key(key_dir: Path) -> None:
    write_secret_file(key_dir / SIGNING_FILE, _line(Ed25519PrivateKey.generate()) + "\n")


def rotate_signing_key(key_dir: Path) -> str:
    """Put a new newest key on top; old keys stay so old checkpoints still verify."""
    new = Ed25519PrivateKey.generate()
    # One rotation at a time: a key dropped by a racing one would leave the checkpoints it
    # signed unverifiable.
    update_secret_file(key_dir / SIGNING_FILE, lambda old: _line(new) + "\n" + old + "\n")
    return key_id_of(new.public_key())


def verify_checkpoint(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> None:
    if checkpoint.damage:
        raise CheckpointError(checkpoint.damage)
    key = keys.get(checkpoint.key_id)
    if key is None:
        raise CheckpointError(f"checkpoint signed by unknown key {checkpoint.key_id}")
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        key.verify(signature, checkpoint.body())
    except (InvalidSignature, ValueError):
        raise CheckpointError(
            f"bad signature on checkpoint of size {checkpoint.tree_size}"
        ) from None
