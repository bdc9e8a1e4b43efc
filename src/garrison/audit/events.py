"""Typed audit events with stable dotted names, and their canonical encoding.

The encoding is versioned (``"v"``) JSON without whitespace, top-level keys in sorted order:
the bytes stored are exactly the bytes the tamper-evident tree hashes. The record names
its own leaf index (``"i"``), so a row moved, removed or slipped in is located exactly. Events never
carry a secret or a request body — only a body's SHA-256 digest and size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

ENCODING_VERSION = 1


class EventName(enum.StrEnum):
    REQUEST_ALLOWED = "request.allowed"
    REQUEST_DENIED = "request.denied"
    REQUEST_COMPLETED = "request.completed"
    ORG_CREATED = "org.created"
    VENDOR_ACTIVATED = "vendor.activated"
    VENDOR_SUSPENDED = "vendor.suspended"
    VENDOR_EXPIRED = "vendor.expired"
    VENDOR_OFFBOARDED = "vendor.offboarded"
    VENDOR_UPDATED = "vendor.updated"
    PRINCIPAL_CREATED = "principal.created"
    PRINCIPAL_UPDATED = "principal.updated"
    CREDENTIAL_CREATED = "credential.created"
    CREDENTIAL_REVOKED = "credential.revoked"
    CREDENTIAL_ROTATED = "credential.rotated"
    MODEL_CREATED = "model.created"
    MODEL_UPDATED = "model.updated"
    SEAL_KEY_ROTATED = "keys.seal_rotated"
    SYSTEM_INITIALIZED = "system.initialized"
    GATEWAY_STARTED = "gateway.started"
    GATEWAY_STOPPED = "gateway.stopped"
    AUDIT_RECOVERED = "audit.recovered"
    ADMIN_DENIED = "admin.denied"
    LOCK_CREATED = "lock.created"
    LOCK_LIFT_REQUESTED = "lock.lift_requested"
    LOCK_LIFTED = "lock.lifted"
    ACCESS_REQUESTED = "access.requested"
    ACCESS_APPROVED = "access.approved"
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    ACCESS_CANCELLED = "access.cancelled"
    ACCESS_EXPIRED = "access.expired"
    GRANT_REVOKED = "grant.revoked"
    CHANGE_PROPOSED = "change.proposed"
    CHANGE_DENIED = "change.denied"
    CHANGE_APPROVED = "change.approved"  # an approval that authorises a later step
    POLICY_CHANGED = "policy.changed"
    ALERT_RAISED = "alert.raised"
    ALERT_UPDATED = "alert.updated"  # acknowledged, resolved, or a playbook acted on it
    RULES_LOADED = "rules.loaded"
    RULES_REFUSED = "rules.refused"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_UPDATED = "incident.updated"
    ADMIN_READ = "admin.read"
    ADMIN_UNCHANGED = "admin.unchanged"  # a write that found nothing to change
    ENROLLMENT_ISSUED = "enrollment.issued"  # an invitation: a one-time code (never stored)
    ENROLLMENT_REDEEMED = "enrollment.redeemed"
    ENROLLMENT_REFUSED = "enrollment.refused"
    BREAK_GLASS = "identity.break_glass"  # recover-admin on the host


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record. The indexed fields are copied to columns for querying."""

    name: EventName
    at: float
    actor: str | None = None
    request_id: str | None = None
    principal_id: str | None = None
    credential_id: str | None = None
    model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # Optional full capture of the request body, already encrypted (never part of the
    # record: the record keeps the body's SHA-256, which binds the capture to the log).
    capture: bytes | None = field(default=None, repr=False)

    def encode(self, index: int) -> bytes:
        """The record of this event as leaf ``index`` of the log.

        Top-level keys are written in sorted order (by construction, not by a sort: orjson's
        recursive key sort costs ten times the rest of the encoding); ``data`` keeps the
        order its producer wrote. The stored bytes are what the tree hashes, so nothing
        ever needs to re-encode an event to verify it.
        """
        return orjson.dumps(
            {
                "actor": self.actor,
                "at": self.at,
                "credential_id": self.credential_id,
                "data": self.data,
                "i": index,
                "model": self.model,
                "name": self.name.value,
                "principal_id": self.principal_id,
                "request_id": self.request_id,
                "v": ENCODING_VERSION,
            }
        )


def decode(record: bytes) -> dict[str, Any]:
    value = orjson.loads(record)
    if not isinstance(value, dict):
        raise ValueError("audit record is not an object")
    return value
