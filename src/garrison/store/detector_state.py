"""The detection worker's row (storage side): its lease, its cursor over the audit log, its
detectors' state and the findings whose playbooks are still to run.

Exactly one gateway process among those sharing the database judges the log. It holds the
lease (``holder`` until ``lease_until``), renews it while it lives, and a standby claims it
once it lapses. Every commit of a judged range — its alerts, the new cursor, the detectors'
state — is one transaction that first checks the holder and the cursor it started from
(``advance``): a worker that stalled past its lease and lost it cannot store a range twice,
whatever the clocks say. The lease decides who works; the check decides what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.errors import DetectionLeaseLost
from garrison.store import schema
from garrison.store.db import write_transaction

_t = schema.detector_state
_a = schema.audit_events
# The one row: one detection worker per database.
ROW_ID = "detection"


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a worker takes over: where the log was judged up to, the detectors' state then
    (``None``: none stored yet), the findings whose playbooks had not run, and who held the
    lease before (``None``: nobody, or this process)."""

    cursor: int
    state: bytes | None
    pending: list[dict[str, Any]]
    previous: str | None


def _bytes(value: object) -> bytes:
    """A binary cell as bytes (drivers hand back bytes or memoryview)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return b""


def head(conn: sa.Connection) -> int:
    """The newest audit row's ``seq`` (0 for an empty log)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(_a.c.seq), 0))).scalar_one())


def claim(engine: sa.Engine, me: str, *, now: float, lease_s: float) -> Claimed | None:
    """Take (or keep) the detection lease if nobody else holds a live one. The first worker
    ever starts at the log's head: history written before detection existed is not judged
    (as when a process starts without a stored cursor)."""
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(_t).where(_t.c.id == ROW_ID)).first()
        if row is None:
            cursor = head(conn)
            conn.execute(
                sa.insert(_t).values(
                    id=ROW_ID,
                    cursor=cursor,
                    state=None,
                    pending="[]",
                    holder=me,
                    lease_until=now + lease_s,
                    updated_at=now,
                )
            )
            return Claimed(cursor, None, [], None)
        if row.holder not in (None, me) and row.lease_until >= now:
            return None
        conn.execute(
            sa.update(_t).where(_t.c.id == ROW_ID).values(holder=me, lease_until=now + lease_s)
        )
        state = _bytes(row.state) if row.state is not None else None
        previous = row.holder if row.holder != me else None
        return Claimed(int(row.cursor), state, orjson.loads(row.pending), previous)


def renew(engine: sa.Engine, me: str, *, now: float, lease_s: float) -> bool:
    """Extend ``me``'s lease; ``False`` when another process holds it now."""
    with write_transaction(engine) as conn:
        done = conn.execute(
            sa.update(_t)
            .where(_t.c.id == ROW_ID, _t.c.holder == me)
            .values(lease_until=now + lease_s)
        )
        return bool(done.rowcount == 1)


def release(engine: sa.Engine, me: str) -> None:
    """Give the lease up (a clean stop): a standby takes over on its next look."""
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(_t).where(_t.c.id == ROW_ID, _t.c.holder == me).values(lease_until=0.0)
        )


def holder(engine: sa.Engine, *, now: float) -> str | None:
    """Who holds a live lease now (``None``: nobody)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_t.c.holder, _t.c.lease_until).where(_t.c.id == ROW_ID)
        ).first()
    if row is None or row.lease_until < now:
        return None
    return str(row.holder) if row.holder is not None else None


def advance(
    conn: sa.Connection,
    me: str,
    *,
    expected: int,
    cursor: int,
    state: bytes,
    pending: list[dict[str, Any]] | None,
    now: float,
    lease_s: float,
) -> None:
    """Inside the caller's write transaction (the one storing the range's alerts): move the
    cursor from ``expected`` to ``cursor`` with the state as of ``cursor`` (``pending``
    replaced unless ``None``), renewing the lease. Raises ``DetectionLeaseLost`` — rolling the
    whole transaction back — unless ``me`` holds the lease and the cursor is where ``me``
    left it."""
    values: dict[str, Any] = {
        "cursor": cursor,
        "state": state,
        "lease_until": now + lease_s,
        "updated_at": now,
    }
    if pending is not None:
        values["pending"] = orjson.dumps(pending).decode()
    done = conn.execute(
        sa.update(_t)
        .where(_t.c.id == ROW_ID, _t.c.holder == me, _t.c.cursor == expected)
        .values(**values)
    )
    if done.rowcount != 1:
        raise DetectionLeaseLost(f"detection lease or cursor moved (expected {expected})")


def clear_pending(engine: sa.Engine, me: str) -> None:
    """The pending findings' playbooks and notices have run."""
    with write_transaction(engine) as conn:
        conn.execute(sa.update(_t).where(_t.c.id == ROW_ID, _t.c.holder == me).values(pending="[]"))


def records_after(conn: sa.Connection, cursor: int, limit: int) -> list[tuple[int, bytes]]:
    """(seq, record) of the audit rows after ``cursor``, in order, at most ``limit``."""
    rows = conn.execute(
        sa.select(_a.c.seq, _a.c.record).where(_a.c.seq > cursor).order_by(_a.c.seq).limit(limit)
    )
    return [(int(seq), _bytes(record)) for seq, record in rows]


def last_used(conn: sa.Connection, upto: int) -> dict[str, float]:
    """Last allowed call of every key in the log up to row ``upto``."""
    rows = conn.execute(
        sa.select(_a.c.credential_id, sa.func.max(_a.c.at))
        .where(
            _a.c.name == "request.allowed",
            _a.c.credential_id.is_not(None),
            _a.c.seq <= upto,
        )
        .group_by(_a.c.credential_id)
    )
    return {r[0]: float(r[1]) for r in rows}


__all__ = [
    "ROW_ID",
    "Claimed",
    "advance",
    "claim",
    "clear_pending",
    "head",
    "holder",
    "last_used",
    "records_after",
    "release",
    "renew",
]
