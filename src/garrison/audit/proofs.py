"""Checking proof files offline, with nothing but a public key. Raises ``ProofError``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from garrison.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    fingerprint_of,
    load_public_b64,
    verify_checkpoint,
)
from garrison.audit.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion


def _hashes(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise ProofError("proof must be a list of hex hashes")
    try:
        return [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise ProofError("proof holds something that is not a hex hash") from None


def _checkpoint(data: Any, keys: Mapping[str, Ed25519PublicKey]) -> Checkpoint:
    try:
        cp = Checkpoint.from_dict(data)
        verify_checkpoint(cp, keys)
    except CheckpointError as exc:
        raise ProofError(str(exc)) from None
    return cp


def check_inclusion_bundle(bundle: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> int:
    """Verify an ``audit prove`` file; return the event's index."""
    if bundle.get("type") != "inclusion":
        raise ProofError("not an inclusion proof")
    cp = _checkpoint(bundle.get("checkpoint"), keys)
    record = bundle.get("record")
    index = bundle.get("index")
    if not isinstance(record, str) or not isinstance(index, int):
        raise ProofError("proof lacks the record or its index")
    verify_inclusion(
        leaf_hash(record.encode()),
        index,
        cp.tree_size,
        _hashes(bundle.get("proof")),
        bytes.fromhex(cp.root),
    )
    return index


def check_consistency_bundle(
    bundle: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[int, int]:
    if bundle.get("type") != "consistency":
        raise ProofError("not a consistency proof")
    old = _checkpoint(bundle.get("old"), keys)
    new = _checkpoint(bundle.get("new"), keys)
    verify_consistency(
        old.tree_size,
        new.tree_size,
        bytes.fromhex(old.root),
        bytes.fromhex(new.root),
        _hashes(bundle.get("proof")),
    )
    return old.tree_size, new.tree_size


def check_evidence_bundle(
    bundle: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[int, int]:
    """Verify an incident evidence bundle; returns (events proven, the checkpoint's size)."""
    if bundle.get("type") != "evidence":
        raise ProofError("not an evidence bundle")
    cp = _checkpoint(bundle.get("checkpoint"), keys)
    events = bundle.get("events")
    if not isinstance(events, list):
        raise ProofError("the bundle lists no events")
    root = bytes.fromhex(cp.root)
    for item in events:
        if not isinstance(item, dict):
            raise ProofError("an event entry is not an object")
        record, index = item.get("record"), item.get("index")
        if not isinstance(record, str) or not isinstance(index, int):
            raise ProofError("an event lacks its record or its index")
        try:
            verify_inclusion(
                leaf_hash(record.encode()), index, cp.tree_size, _hashes(item.get("proof")), root
            )
        except ProofError as exc:
            raise ProofError(f"event {index}: {exc}") from None
    return len(events), cp.tree_size


def normalise_fingerprint(text: str) -> str:
    """``sha256:<hex>`` in lower case; the prefix and ``:`` between byte pairs are optional."""
    body = text.strip().lower().removeprefix("sha256:").replace(":", "")
    return "sha256:" + body


def keys_with_fingerprints(
    offered: Mapping[str, Any], fingerprints: Sequence[str]
) -> dict[str, Ed25519PublicKey]:
    """The offered keys (key id → key, or base64 as a bundle carries them) whose fingerprint
    is one of ``fingerprints``: a key is believed only if it was obtained independently, or
    matches a fingerprint that was."""
    wanted = {normalise_fingerprint(f) for f in fingerprints}
    out: dict[str, Ed25519PublicKey] = {}
    for kid, value in offered.items():
        try:
            key = value if isinstance(value, Ed25519PublicKey) else load_public_b64(str(value))
        except CheckpointError:
            continue
        if fingerprint_of(key) in wanted:
            out[str(kid)] = key
    return out


def signing_key_id(bundle: Mapping[str, Any]) -> str | None:
    """The key id that signed a proof file's (newest) checkpoint."""
    cp = bundle.get("new") if bundle.get("type") == "consistency" else bundle.get("checkpoint")
    return str(cp.get("key_id")) if isinstance(cp, dict) else None
