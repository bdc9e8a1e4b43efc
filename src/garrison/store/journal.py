"""The writer's context every directory write takes, and the one function that records its
audit event.

A ``Journal`` names who is writing (``actor``, named in every audit event), where the change
came from (``origin``: for the admin API the admin's name, key id, address and request id,
kept in every event's data) and the secrets some writes need (the ``pepper`` that hashes
keys and codes, the ``sealer`` that seals upstream credentials). Store modules take a
``Journal``; ``store.directory.Directory`` is the facade callers use, and is one.

``record`` writes a change's audit event into the audit outbox in the change's own
transaction, so the change and its record commit together or not at all; only the audit
writer gives the event its leaf index (``garrison.audit.outbox``). With ``feed`` it also
writes a change-feed row, which makes every gateway process load a new snapshot (on
PostgreSQL it also notifies them: ``store.change_feed``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from garrison.audit.events import AuditEvent, EventName
from garrison.audit.payload_base import Payload
from garrison.errors import Conflict
from garrison.keyring import Sealer
from garrison.store import schema
from garrison.store.change_feed import notify_change
from garrison.store.db import outbox_written


class Journal:
    """Writes on behalf of ``actor`` with ``origin``, to ``engine``'s database."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        actor: str,
        pepper: bytes,
        sealer: Sealer,
        origin: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.actor = actor
        self.origin = origin
        self._pepper = pepper
        self._sealer = sealer

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    @property
    def pepper(self) -> bytes:
        return self._pepper

    def acting(self, actor: str, origin: dict[str, Any] | None) -> Journal:
        """The same database and secrets, written on behalf of someone else (a person
        redeeming their own enrollment code makes their own key)."""
        return Journal(
            self.engine, actor=actor, pepper=self._pepper, sealer=self._sealer, origin=origin
        )


def record(
    conn: sa.Connection,
    *,
    at: float,
    actor: str,
    entity: str,
    entity_id: str,
    op: str,
    payload: Payload | None = None,
    name: EventName | None = None,
    data: dict[str, Any] | None = None,
    principal_id: str | None = None,
    credential_id: str | None = None,
    model: str | None = None,
    origin: dict[str, Any] | None = None,
    feed: bool = True,
) -> None:
    """One audit event in the caller's transaction (into the audit outbox, for the audit
    writer to index), and (``feed``) a change-feed row that makes every gateway process load
    a new snapshot. Changes the snapshot does not hold (alerts, incidents, proposals,
    requests) pass ``feed=False``.

    The event is ``payload`` (its name and data; every producer writes one), or ``name``
    and ``data`` for a record copied as it is (``Directory.record_copy``)."""
    if payload is not None:
        if name is not None or data is not None:
            raise TypeError("record takes a payload or a name and data, not both")
        name, data = payload.NAME, payload.as_data()
    elif name is None or data is None:
        raise TypeError("record needs a payload, or a name and data")
    if origin:
        # Where the change came from (the admin API: the admin's key, address, request id).
        data = {**data, "origin": origin}
        change_id = origin.get("change_id")
        if change_id is not None:
            # Applying a two-person change: it is marked approved in this same transaction,
            # so the change and its approval commit together or not at all.
            mark_applied(conn, change_id, actor=actor, at=at)
    if feed:
        inserted = conn.execute(
            sa.insert(schema.change_feed).values(at=at, entity=entity, entity_id=entity_id, op=op)
        ).inserted_primary_key
        # PostgreSQL: wakes every replica, delivered only when this transaction commits.
        notify_change(conn, int(inserted[0]) if inserted else 0)
    event = AuditEvent(
        name,
        at=at,
        actor=actor,
        request_id=origin.get("request_id") if origin else None,
        principal_id=principal_id,
        credential_id=credential_id,
        model=model,
        data=data,
    )
    # Into the outbox, in this same transaction: the change and its record commit together or
    # not at all. Only the audit writer gives it a leaf index (garrison.audit.sqlite_sink).
    conn.execute(
        sa.insert(schema.audit_outbox).values(
            at=at,
            name=name.value,
            request_id=event.request_id,
            principal_id=principal_id,
            credential_id=credential_id,
            model=model,
            record=event.unindexed(),
        )
    )
    outbox_written(conn)


def mark_applied(conn: sa.Connection, change_id: str, *, actor: str, at: float) -> None:
    """Mark a pending change approved by ``actor`` (idempotent within one transaction)."""
    pc = schema.pending_changes
    done = conn.execute(
        sa.update(pc)
        .where(
            pc.c.id == change_id,
            sa.or_(
                pc.c.status == "pending",
                sa.and_(pc.c.status == "approved", pc.c.decided_by == actor, pc.c.decided_at == at),
            ),
        )
        .values(status="approved", decided_by=actor, decided_at=at)
    ).rowcount
    if not done:
        raise Conflict(f"change {change_id} is no longer pending")
