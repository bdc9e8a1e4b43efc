"""Keys and locks: a locked key, person or vendor is issued no new key, and a lock on a key
carries to the keys rotated from it.

A rotation's lineage is read from the audit log itself (each ``credential.rotated`` event
names its successor; each successor's ``credential.created`` names the key it came from),
through the log's index on the credential id: the log is the record of who came from whom,
so no second copy of it can disagree.

``refusal`` is checked inside the transaction that would issue the key, so a lock placed a
moment earlier (by any process) is always seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.domain.locks import LockKind
from garrison.errors import Forbidden
from garrison.store import schema

# Rotations followed along one lineage: a key rotated daily for ten years is ~3,650; more
# than this means a loop or a misuse, and the walk stops rather than running unbounded.
LINEAGE_MAX_KEYS = 10_000

# The rule an admin is shown (and the audit record keeps) when a key is refused for a lock.
LOCKED_RULE = "target-locked"

ae = schema.audit_events
lk = schema.locks


def _linked(conn: sa.Connection, key_id: str, event: str, field: str) -> list[str]:
    rows = conn.execute(
        sa.select(ae.c.record).where(ae.c.credential_id == key_id, ae.c.name == event)
    )
    out = []
    for (record,) in rows:
        value = orjson.loads(record).get("data", {}).get(field)
        if isinstance(value, str):
            out.append(value)
    return out


def successors(conn: sa.Connection, key_id: str) -> list[str]:
    """Every key rotated from ``key_id``, directly or through other rotations."""
    found: list[str] = []
    seen = {key_id}
    frontier = [key_id]
    while frontier and len(found) < LINEAGE_MAX_KEYS:
        current = frontier.pop()
        for nxt in _linked(conn, current, "credential.rotated", "successor"):
            if nxt not in seen:
                seen.add(nxt)
                found.append(nxt)
                frontier.append(nxt)
    return found[:LINEAGE_MAX_KEYS]


def ancestors(conn: sa.Connection, key_id: str) -> list[str]:
    """The keys ``key_id`` was rotated from, nearest first."""
    found: list[str] = []
    seen = {key_id}
    current: str | None = key_id
    while current is not None and len(found) < LINEAGE_MAX_KEYS:
        parents = _linked(conn, current, "credential.created", "rotated_from")
        current = parents[0] if parents and parents[0] not in seen else None
        if current is not None:
            seen.add(current)
            found.append(current)
    return found


def _active_lock(conn: sa.Connection, kind: LockKind, targets: Iterable[str], now: float) -> Any:
    wanted = list(targets)
    if not wanted:
        return None
    return conn.execute(
        sa.select(lk.c.id, lk.c.kind, lk.c.target_name)
        .where(
            lk.c.kind == kind.value,
            lk.c.target.in_(wanted),
            lk.c.lifted_at.is_(None),
            sa.or_(lk.c.expires_at.is_(None), lk.c.expires_at > now),
        )
        .limit(1)
    ).first()


def covering_lock(
    conn: sa.Connection,
    *,
    principal_id: str,
    org_id: str,
    now: float,
    key_id: str | None = None,
) -> Any:
    """The active lock on the key (or a key it was rotated from), its principal (or, for a
    service account, the person who owns it) or its org."""
    if key_id is not None:
        found = _active_lock(conn, LockKind.CREDENTIAL, [key_id, *ancestors(conn, key_id)], now)
        if found is not None:
            return found
    p = schema.principals
    owner = conn.execute(sa.select(p.c.owner_id).where(p.c.id == principal_id)).scalar()
    found = _active_lock(conn, LockKind.PRINCIPAL, [principal_id, *([owner] if owner else [])], now)
    if found is not None:
        return found
    return _active_lock(conn, LockKind.VENDOR, [org_id], now)


def refuse_if_locked(
    conn: sa.Connection,
    *,
    principal_id: str,
    org_id: str,
    now: float,
    key_id: str | None = None,
    action: str = "issue a key",
) -> None:
    """Raise ``Forbidden`` naming the lock when one covers the key, principal or org."""
    lock = covering_lock(conn, principal_id=principal_id, org_id=org_id, now=now, key_id=key_id)
    if lock is not None:
        raise Forbidden(
            f"rule {LOCKED_RULE}: cannot {action}: {lock.kind} {lock.target_name} is locked "
            f"({lock.id}); a security-admin lifts the lock first"
        )
