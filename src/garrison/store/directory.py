"""The directory's facade: one object that makes every directory write on behalf of an actor.

Admin handlers, the CLI and bootstrap hold a ``Directory``; the writes themselves live in
the store module named for what they change (principals, keys, vendors, registry, locks,
incidents), each taking the writer's context (``store.journal.Journal``, which a
``Directory`` is). Each write is one transaction holding the change, its change-feed row and
its audit event, so nothing is ever half-written and nothing changes unrecorded. The event
goes to the audit outbox; the audit writer alone gives it its leaf index
(``garrison.audit``).

Validation happens before the transaction opens; a bad input raises ``BadRequest`` (or
``Conflict`` for a taken name) naming the rule, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from garrison.audit.events import EventName
from garrison.audit.payload_base import Payload
from garrison.domain import Status
from garrison.domain.directory_rules import KEY_MAX_LIFETIME_S as KEY_MAX_LIFETIME_S
from garrison.domain.directory_rules import KEY_ROTATION_GRACE_MAX_S as KEY_ROTATION_GRACE_MAX_S
from garrison.domain.names import COMPARTMENTS_MAX as COMPARTMENTS_MAX
from garrison.domain.names import KEY_MAX_NETWORKS as KEY_MAX_NETWORKS
from garrison.domain.names import NAME_MAX_CHARS as NAME_MAX_CHARS
from garrison.domain.names import URL_MAX_CHARS as URL_MAX_CHARS
from garrison.domain.names import check_name as check_name
from garrison.domain.names import check_networks as check_networks
from garrison.domain.provenance import Provenance
from garrison.store import (
    incidents,
    journal,
    keys,
    locks,
    principals,
    registry,
    vendor_keys,
    vendors,
)
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.keys import CreatedKey as CreatedKey


class Directory(Journal):
    """Writes to the directory on behalf of ``actor`` (who is named in every audit event).

    ``origin`` says where the change came from (for the admin API: the admin's name, key id,
    address and request id) and is kept in every event's data.
    """

    # The writes whose first parameter is the writer's context are methods as they stand
    # (a function in a class body binds as a method: ``d.create_model(...)`` calls
    # ``registry.create_model(d, ...)``), so each signature is stated once, in its module.
    create_org = vendors.create_org
    create_vendor = vendors.create_vendor
    update_vendor = vendors.update_vendor
    set_vendor_status = vendors.set_vendor_status
    create_principal = principals.create_principal
    update_principal = principals.update_principal
    rotate_vendor_keys = vendor_keys.rotate_vendor_keys
    create_model = registry.create_model
    update_model = registry.update_model
    reseal_upstream_keys = registry.reseal_upstream_keys
    create_lock = locks.create_lock
    lift_lock = locks.lift_lock
    open_incident = incidents.open_incident
    update_incident = incidents.update_incident

    def set_principal_status(self, ref: str, status: Status, *, now: float) -> None:
        principals.update_principal(self, ref, status=status, now=now)

    def create_key(
        self,
        principal: str,
        *,
        now: float,
        expires_in: float | None = None,
        networks: Iterable[str] = (),
        note: str = "",
        canary: bool = False,
        provenance: Provenance = Provenance.LEGACY,
        created_by: str | None = None,
        change_id: str | None = None,
        cert_thumbprint: str | None = None,
    ) -> CreatedKey:
        """A key for ``principal`` (``store.keys.create_key``)."""
        return keys.create_key(
            self,
            principal,
            now=now,
            expires_in=expires_in,
            networks=networks,
            note=note,
            canary=canary,
            provenance=provenance,
            created_by=created_by,
            change_id=change_id,
            cert_thumbprint=cert_thumbprint,
        )

    def rotate_key(
        self,
        key_id: str,
        *,
        now: float,
        grace_s: float = 0.0,
        reason: str = "",
        provenance: Provenance | None = None,
        change_id: str | None = None,
    ) -> CreatedKey:
        """A successor to a live key, the old one retired (``store.keys.rotate_key``)."""
        return keys.rotate_key(
            self,
            key_id,
            now=now,
            grace_s=grace_s,
            reason=reason,
            provenance=provenance,
            change_id=change_id,
        )

    def revoke_key(self, key_id: str, *, now: float, reason: str) -> None:
        keys.revoke_key(self, key_id, now=now, reason=reason)

    def record_event(self, payload: Payload, *, now: float) -> None:
        """A system event (no directory change): ``payload``'s name and data."""
        with write_transaction(self.engine) as conn:
            journal.record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                payload=payload,
                entity="system",
                entity_id="-",
                op=payload.NAME.value,
                feed=False,
            )

    def record_copy(self, name: EventName, *, now: float, data: dict[str, Any]) -> None:
        """An event whose ``data`` is given as it is, not built from a payload: a record
        copied from elsewhere (tests replay recorded events through this)."""
        with write_transaction(self.engine) as conn:
            journal.record(
                conn,
                at=now,
                actor=self.actor,
                origin=self.origin,
                name=name,
                entity="system",
                entity_id="-",
                op=name.value,
                data=data,
                feed=False,
            )
