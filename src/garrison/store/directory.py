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
from garrison.domain import (
    AuthStyle,
    Level,
    OrgKind,
    PrincipalKind,
    Status,
    UpstreamApi,
    VendorStatus,
)
from garrison.domain.directory_rules import KEY_MAX_LIFETIME_S as KEY_MAX_LIFETIME_S
from garrison.domain.directory_rules import KEY_ROTATION_GRACE_MAX_S as KEY_ROTATION_GRACE_MAX_S
from garrison.domain.locks import LockKind
from garrison.domain.names import COMPARTMENTS_MAX as COMPARTMENTS_MAX
from garrison.domain.names import KEY_MAX_NETWORKS as KEY_MAX_NETWORKS
from garrison.domain.names import NAME_MAX_CHARS as NAME_MAX_CHARS
from garrison.domain.names import URL_MAX_CHARS as URL_MAX_CHARS
from garrison.domain.names import check_name as check_name
from garrison.domain.names import check_networks as check_networks
from garrison.domain.provenance import Provenance
from garrison.domain.upstream_tls import UpstreamTls
from garrison.keyring import Sealer
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
from garrison.store.invitations import Invitation
from garrison.store.journal import Journal
from garrison.store.keys import CreatedKey as CreatedKey


class Directory(Journal):
    """Writes to the directory on behalf of ``actor`` (who is named in every audit event).

    ``origin`` says where the change came from (for the admin API: the admin's name, key id,
    address and request id) and is kept in every event's data.
    """

    def create_org(self, name: str, kind: OrgKind, *, now: float) -> str:
        """An internal org. Vendors carry terms: ``create_vendor``."""
        return vendors.create_org(self, name, kind, now=now)

    def create_principal(
        self,
        name: str,
        *,
        org: str,
        kind: PrincipalKind,
        clearance: Level,
        compartments: Iterable[str] = (),
        roles: Iterable[str] = (),
        now: float,
        dry_run: bool = False,
        owner: str | None = None,
    ) -> str:
        """A new principal; ``dry_run`` checks every rule and writes nothing. A service
        account names its ``owner``, an active person (a lock on them covers it)."""
        return principals.create_principal(
            self,
            name,
            org=org,
            kind=kind,
            clearance=clearance,
            compartments=compartments,
            roles=roles,
            now=now,
            dry_run=dry_run,
            owner=owner,
        )

    def set_principal_status(self, ref: str, status: Status, *, now: float) -> None:
        principals.update_principal(self, ref, status=status, now=now)

    def update_principal(self, ref: str, **changes: Any) -> dict[str, Any]:
        return principals.update_principal(self, ref, **changes)

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

    def rotate_vendor_keys(
        self, vendor: str, *, now: float, reason: str, may_issue: Any = None
    ) -> list[CreatedKey | Invitation]:
        """Containment for a vendor (``store.vendor_keys.rotate_vendor_keys``)."""
        return vendor_keys.rotate_vendor_keys(
            self, vendor, now=now, reason=reason, may_issue=may_issue
        )

    def update_model(self, ref: str, **changes: Any) -> dict[str, Any]:
        return registry.update_model(self, ref, **changes)

    def create_lock(self, kind: LockKind, ref: str, **kw: Any) -> dict[str, Any]:
        return locks.create_lock(self, kind, ref, **kw)

    def lift_lock(self, lock_id: str, **kw: Any) -> dict[str, Any]:
        return locks.lift_lock(self, lock_id, **kw)

    def open_incident(self, title: str, **kw: Any) -> str:
        return incidents.open_incident(self, title, **kw)

    def update_incident(self, incident_id: str, **kw: Any) -> dict[str, Any]:
        return incidents.update_incident(self, incident_id, **kw)

    def create_vendor(self, name: str, **terms: Any) -> str:
        return vendors.create_vendor(self, name, **terms)

    def update_vendor(self, ref: str, **changes: Any) -> dict[str, Any]:
        return vendors.update_vendor(self, ref, **changes)

    def set_vendor_status(
        self, ref: str, target: VendorStatus, *, now: float, reason: str = ""
    ) -> None:
        vendors.set_vendor_status(self, ref, target, now=now, reason=reason)

    def create_model(
        self,
        name: str,
        *,
        upstream_url: str,
        upstream_model: str,
        api: UpstreamApi,
        auth_style: AuthStyle,
        level: Level,
        compartments: Iterable[str] = (),
        upstream_key: str | None = None,
        extra_fields: Iterable[str] = (),
        upstream_key_sealed: bytes | None = None,
        upstream_tls: UpstreamTls | None = None,
        now: float,
        dry_run: bool = False,
    ) -> str:
        """A new model (``store.registry.create_model``)."""
        return registry.create_model(
            self,
            name,
            upstream_url=upstream_url,
            upstream_model=upstream_model,
            api=api,
            auth_style=auth_style,
            level=level,
            compartments=compartments,
            upstream_key=upstream_key,
            extra_fields=extra_fields,
            upstream_key_sealed=upstream_key_sealed,
            upstream_tls=upstream_tls,
            now=now,
            dry_run=dry_run,
        )

    def reseal_upstream_keys(self, sealer: Sealer, *, now: float) -> int:
        """Re-encrypt every sealed upstream key under ``sealer``'s newest key."""
        return registry.reseal_upstream_keys(self, sealer, now=now)

    def record_event(self, name: EventName, *, now: float, data: dict[str, Any]) -> None:
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
