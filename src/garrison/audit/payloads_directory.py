"""Typed ``data`` of the directory's events: orgs and vendors, principals, keys, enrollment
codes issued, models and the sealing key (``garrison.store``'s writers build them).

Each class's fields are the keys its producer writes, in that order (``payload_base``); the
journal adds ``origin`` after them when the change came through the admin API. Lists are
written as the producer gives them (a list or a tuple: orjson writes both as one JSON array).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from garrison.audit.events import EventName
from garrison.audit.payload_base import ABSENT, Absent, Payload, keyed, named, required


@named(EventName.ORG_CREATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class OrgCreated(Payload):
    """``org.created``: an internal org (the first three fields), or a vendor with its
    terms (all of them)."""

    org_id: str = required()
    name: str
    kind: str
    sponsor_id: str | Absent = ABSENT
    contract_start: float | Absent = ABSENT
    contract_end: float | Absent = ABSENT
    networks: Sequence[str] | Absent = ABSENT
    seat_limit: int | Absent = ABSENT
    ceiling_level: str | Absent = ABSENT
    ceiling_compartments: Sequence[str] | Absent = ABSENT
    security_review_at: float | Absent | None = ABSENT
    agreement_ref: str | Absent = ABSENT


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorStatusChanged(Payload):
    """A vendor moved from one status to another (``vendor.activated`` and the rest, one
    subclass each): on offboarding, how many keys were revoked and principals disabled."""

    org_id: str = required()
    name: str
    from_status: str = keyed("from")
    to: str
    reason: str
    keys_revoked: int
    principals_disabled: int


@named(EventName.VENDOR_ACTIVATED)
class VendorActivated(VendorStatusChanged):
    __slots__ = ()


@named(EventName.VENDOR_SUSPENDED)
class VendorSuspended(VendorStatusChanged):
    __slots__ = ()


@named(EventName.VENDOR_EXPIRED)
class VendorExpired(VendorStatusChanged):
    __slots__ = ()


@named(EventName.VENDOR_OFFBOARDED)
class VendorOffboarded(VendorStatusChanged):
    __slots__ = ()


@named(EventName.VENDOR_UPDATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class VendorUpdated(Payload):
    """``vendor.updated``: the terms changed (name → new value) and how many keys were
    clipped to them."""

    org_id: str = required()
    name: str
    changes: Mapping[str, Any]
    keys_clipped: int


@named(EventName.PRINCIPAL_CREATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalCreated(Payload):
    """``principal.created``; a service account names its owner."""

    name: str
    org_id: str = required()
    kind: str
    roles: Sequence[str]
    clearance: str
    compartments: Sequence[str]
    owner_id: str | Absent = ABSENT


@named(EventName.PRINCIPAL_UPDATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalUpdated(Payload):
    """``principal.updated``: each field changed, as ``[before, after]``."""

    name: str
    changes: Mapping[str, Any]


@named(EventName.CREDENTIAL_CREATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialCreated(Payload):
    """``credential.created``: the key's terms and who made it; the certificate it is bound
    to, and where it came from when it replaces one (``rotated_from``), was made by a
    vendor's containment (``vendor_rotation``) or by redeeming an enrollment code."""

    expires_at: float
    networks: Sequence[str]
    note: str
    provenance: str
    created_by: str
    cert_thumbprint: str | Absent = ABSENT
    rotated_from: str | Absent = ABSENT
    vendor_rotation: str | Absent = ABSENT
    enrollment_id: str | Absent = ABSENT
    invited_by: str | Absent | None = ABSENT


@named(EventName.CREDENTIAL_REVOKED)
@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRevoked(Payload):
    """``credential.revoked``: why; ``rotation: "re-enroll"`` when a person's key was
    rotated by a new enrollment code, ``vendor_rotation`` when a vendor's containment did."""

    reason: str
    rotation: str | Absent = ABSENT
    vendor_rotation: str | Absent = ABSENT


@named(EventName.CREDENTIAL_ROTATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRotated(Payload):
    """``credential.rotated``: the successor's id and how long the old key lived on."""

    successor: str
    grace_s: float
    reason: str


@named(EventName.ENROLLMENT_ISSUED)
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentIssued(Payload):
    """``enrollment.issued``: an enrollment code (never the code itself) for ``name``; why
    (an invitation or a rotation) and the two-person change that authorised it."""

    enrollment_id: str
    name: str
    expires_at: float
    why: str
    change_id: str | Absent = ABSENT


@named(EventName.MODEL_CREATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCreated(Payload):
    """``model.created``: the upstream and the model's classification; ``upstream_key`` is
    ``"sealed"`` or null (never the key); the TLS files when it has its own."""

    upstream_url: str
    upstream_model: str
    api: str
    level: str
    compartments: Sequence[str]
    upstream_key: str | None
    extra_fields: Sequence[str]
    upstream_tls: Mapping[str, str | None] | Absent = ABSENT


@named(EventName.MODEL_UPDATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class ModelUpdated(Payload):
    """``model.updated``: each field changed (a replaced key as ``"replaced"``)."""

    name: str
    changes: Mapping[str, Any]


@named(EventName.SEAL_KEY_ROTATED)
@dataclass(frozen=True, slots=True, kw_only=True)
class SealKeyRotated(Payload):
    """``keys.seal_rotated``: how many upstream keys were sealed again."""

    resealed: int


PAYLOADS: tuple[type[Payload], ...] = (
    OrgCreated,
    VendorActivated,
    VendorSuspended,
    VendorExpired,
    VendorOffboarded,
    VendorUpdated,
    PrincipalCreated,
    PrincipalUpdated,
    CredentialCreated,
    CredentialRevoked,
    CredentialRotated,
    EnrollmentIssued,
    ModelCreated,
    ModelUpdated,
    SealKeyRotated,
)
