"""A lock placed while the database cannot be written (see ``store.emergency_locks``): the
target is resolved from the snapshot this process holds, which the outage did not touch."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from garrison.domain.locks import LockKind
from garrison.domain.networks import parse_network
from garrison.errors import BadRequest
from garrison.store.emergency_locks import EMERGENCY_SLOT_BYTES
from garrison.store.locks import LOCK_TTL_MAX_S, _reason
from garrison.store.snapshot import Snapshot

# Appended to a reason shortened to fit the lock's journal slot.
SHORTENED_MARK = " […]"


def resolve(snap: Snapshot, kind: LockKind, ref: str) -> tuple[str, str]:
    """A lock's target and its name, from the snapshot."""
    if kind is LockKind.ALL:
        return "*", "everything"
    if kind is LockKind.NETWORK:
        try:
            # Canonical, as on the normal path: a mapped network means its IPv4 network.
            net = parse_network(ref, strict=False)
        except ValueError as exc:
            raise BadRequest(f"invalid network {ref!r}: {exc}") from None
        return str(net), str(net)
    if kind is LockKind.CREDENTIAL:
        if ref not in snap.credentials:
            raise BadRequest(f"key {ref!r} does not exist")
        return ref, ref
    named: list[tuple[str, str]]
    if kind is LockKind.PRINCIPAL:
        named = [(p.id, p.name) for p in snap.principals.values()]
        what = "principal"
    elif kind is LockKind.VENDOR:
        named = [(o.id, o.name) for o in snap.orgs.values()]
        what = "vendor"
    else:
        named = [(m.id, m.name) for m in snap.models.values()]
        what = "model"
    for found in named:
        if ref in found:
            return found
    raise BadRequest(f"{what} {ref!r} does not exist")


def lock_record(
    snap: Snapshot,
    kind: LockKind,
    ref: str,
    *,
    reason: str,
    actor: str,
    now: float,
    ttl_s: float | None,
) -> dict[str, Any]:
    """The lock as the journal keeps it (the same fields as a ``locks`` row)."""
    if ttl_s is not None and not 0 < ttl_s <= LOCK_TTL_MAX_S:
        raise BadRequest(
            f"a lock's TTL must be positive and at most {LOCK_TTL_MAX_S // 86400} days"
        )
    target, name = resolve(snap, kind, ref)
    return _fitted(
        {
            "id": f"lck_{secrets.token_hex(8)}",
            "kind": kind.value,
            "target": target,
            "target_name": name,
            "reason": _reason(reason),
            "created_by": actor,
            "created_at": now,
            "expires_at": now + ttl_s if ttl_s is not None else None,
        }
    )


def _fitted(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its reason shortened until it fits one journal slot: 500 characters
    of four-byte UTF-8 (emoji, some scripts) do not, and a lock is never refused for the
    length of its reason."""
    full = record["reason"]
    reason = full
    size = len(orjson.dumps(record))
    while size >= EMERGENCY_SLOT_BYTES and reason:
        reason = reason[: max(0, len(reason) - (size - EMERGENCY_SLOT_BYTES + 1))]
        record = {**record, "reason": reason + SHORTENED_MARK}
        size = len(orjson.dumps(record))
    return record
