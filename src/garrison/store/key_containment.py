"""Keys and locks: a locked key, person or vendor is issued no new key, and a lock on a key
carries to the keys rotated from it and to the keys its holder made while presenting it.

A rotation's lineage is read from the audit log itself (each ``credential.rotated`` event
names its successor; each successor's ``credential.created`` names the key it came from),
through the log's index on the credential id: the log is the record of who came from whom,
so no second copy of it can disagree. Events still in the audit outbox count too
(``garrison.store.audit_rows``): a key made a moment before the lock is covered.

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
from garrison.store.audit_rows import audit_rows

# Rotations followed along one lineage: a key rotated daily for ten years is ~3,650; more
# than this means a loop or a misuse, and the walk stops rather than running unbounded.
LINEAGE_MAX_KEYS = 10_000

# The rule an admin is shown (and the audit record keeps) when a key is refused for a lock.
LOCKED_RULE = "target-locked"

# Leaves and outbox alike: a key made a moment ago (its event not yet indexed) is covered.
ae = audit_rows()
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


def _made_with(conn: sa.Connection, key_id: str) -> list[str]:
    """Keys the holder of ``key_id`` made for themselves while presenting it (``POST
    /keys/self``, or rotating another of their keys): whoever held ``key_id`` holds those
    too, so a lock on it must reach them. Read through the principal index."""
    c = schema.credentials
    holder = conn.execute(sa.select(c.c.principal_id).where(c.c.id == key_id)).scalar()
    if holder is None:
        return []
    rows = conn.execute(
        sa.select(ae.c.credential_id, ae.c.record).where(
            ae.c.principal_id == holder,
            ae.c.name == "credential.created",
            ae.c.credential_id != key_id,
        )
    )
    out = []
    for credential_id, record in rows:
        origin = (orjson.loads(record).get("data") or {}).get("origin") or {}
        if origin.get("credential_id") == key_id and isinstance(credential_id, str):
            out.append(credential_id)
    return out


def _made_by(conn: sa.Connection, key_id: str) -> list[str]:
    """The key its holder presented to make ``key_id`` (if it is theirs too)."""
    c = schema.credentials
    out = []
    for (record,) in conn.execute(
        sa.select(ae.c.record).where(
            ae.c.credential_id == key_id, ae.c.name == "credential.created"
        )
    ):
        origin = (orjson.loads(record).get("data") or {}).get("origin") or {}
        parent = origin.get("credential_id")
        if isinstance(parent, str) and parent != key_id:
            holders = conn.execute(
                sa.select(c.c.principal_id).where(c.c.id.in_([parent, key_id]))
            ).scalars()
            if len(set(holders)) == 1:
                out.append(parent)
    return out


def successors(conn: sa.Connection, key_id: str) -> list[str]:
    """Every key rotated from ``key_id``, or made with it by its holder, directly or through
    other such keys."""
    found: list[str] = []
    seen = {key_id}
    frontier = [key_id]
    while frontier and len(found) < LINEAGE_MAX_KEYS:
        current = frontier.pop()
        for nxt in [
            *_linked(conn, current, "credential.rotated", "successor"),
            *_made_with(conn, current),
        ]:
            if nxt not in seen:
                seen.add(nxt)
                found.append(nxt)
                frontier.append(nxt)
    return found[:LINEAGE_MAX_KEYS]


def ancestors(conn: sa.Connection, key_id: str) -> list[str]:
    """The keys ``key_id`` was rotated from or made with (by the same holder), nearest
    first."""
    found: list[str] = []
    seen = {key_id}
    frontier = [key_id]
    while frontier and len(found) < LINEAGE_MAX_KEYS:
        current = frontier.pop(0)
        for parent in [
            *_linked(conn, current, "credential.created", "rotated_from"),
            *_made_by(conn, current),
        ]:
            if parent not in seen:
                seen.add(parent)
                found.append(parent)
                frontier.append(parent)
    return found[:LINEAGE_MAX_KEYS]


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
            f"cannot {action}: {lock.kind} {lock.target_name} is locked "
            f"({lock.id}); a security-admin lifts the lock first",
            rule=LOCKED_RULE,
        )
