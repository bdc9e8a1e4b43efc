"""Gateway instances and their leases (storage side).

Each serving process registers itself under its request-id prefix and renews a lease while
it lives. A process that stops cleanly ends its own row; one that is killed leaves a lease
that lapses, and another process (or its own successor) claims the row and gives every call
the dead process allowed but never finished an explicit ``process_ended`` outcome — so
reports and detectors do not read those calls as still running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.store import schema
from garrison.store.db import write_transaction

_t = schema.gateway_instances
# Calls of one lapsed instance given an outcome per pass (bounded work per tick; the next
# tick continues where this one stopped).
UNFINISHED_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A call its process allowed (``request.allowed``) and never recorded the end of."""

    request_id: str
    principal_id: str | None
    credential_id: str | None
    model: str | None
    data: dict[str, Any]  # the allowed record's data: endpoint, client address, org


def register(
    engine: sa.Engine, instance_id: str, *, host: str, pid: int, now: float, lease_s: float
) -> None:
    """Start (or restart, in the same process) this instance's lease."""
    with write_transaction(engine) as conn:
        conn.execute(sa.delete(_t).where(_t.c.id == instance_id))
        conn.execute(
            sa.insert(_t).values(
                id=instance_id, host=host, pid=pid, started_at=now, lease_until=now + lease_s
            )
        )


def renew(engine: sa.Engine, instance_id: str, *, now: float, lease_s: float) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(_t)
            .where(_t.c.id == instance_id, _t.c.ended_at.is_(None))
            .values(lease_until=now + lease_s)
        )


def end(engine: sa.Engine, instance_id: str, *, now: float) -> None:
    """A clean stop: every outcome of this instance is written."""
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(_t)
            .where(_t.c.id == instance_id, _t.c.ended_at.is_(None))
            .values(ended_at=now, ended_by=instance_id)
        )


def any_live(engine: sa.Engine, *, now: float) -> bool:
    """Is some gateway process alive (its lease not lapsed, not stopped)?"""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_t.c.id).where(_t.c.ended_at.is_(None), _t.c.lease_until >= now).limit(1)
        ).first()
    return row is not None


def claim_lapsed(engine: sa.Engine, me: str, *, now: float) -> list[str]:
    """Instances whose lease lapsed without a clean stop, claimed by ``me`` (each claimed by
    exactly one process, however many look at once)."""
    with write_transaction(engine) as conn:
        lapsed = (
            conn.execute(
                sa.select(_t.c.id).where(
                    _t.c.ended_at.is_(None), _t.c.lease_until < now, _t.c.id != me
                )
            )
            .scalars()
            .all()
        )
        claimed: list[str] = []
        for instance_id in lapsed:
            done = conn.execute(
                sa.update(_t)
                .where(_t.c.id == instance_id, _t.c.ended_at.is_(None))
                .values(ended_at=now, ended_by=me)
            )
            if done.rowcount == 1:
                claimed.append(instance_id)
        return claimed


def unfinished(engine: sa.Engine, instance_id: str) -> list[Unfinished]:
    """Calls of ``instance_id`` with a ``request.allowed`` and no ``request.completed``
    (a range on the request-id index: the instance id is its request ids' prefix)."""
    e = schema.audit_events
    allowed = e.alias("allowed")
    completed = e.alias("completed")
    done = sa.select(sa.literal(1)).where(
        completed.c.request_id == allowed.c.request_id,
        completed.c.name == "request.completed",
    )
    query = (
        sa.select(
            allowed.c.request_id,
            allowed.c.principal_id,
            allowed.c.credential_id,
            allowed.c.model,
            allowed.c.record,
        )
        .where(
            allowed.c.request_id >= instance_id,
            allowed.c.request_id < instance_id + "~",
            allowed.c.name == "request.allowed",
            ~sa.exists(done),
        )
        .order_by(allowed.c.seq)
        .limit(UNFINISHED_BATCH)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found: list[Unfinished] = []
    for request_id, principal_id, credential_id, model, record in rows:
        data = orjson.loads(record).get("data") or {}
        found.append(Unfinished(request_id, principal_id, credential_id, model, data))
    return found


__all__ = ["Unfinished", "claim_lapsed", "end", "register", "renew", "unfinished"]
