"""Request bodies of the admin API, as strict pydantic models.

The models check shapes and bounds (types, lengths, counts, enumerations; unknown fields are
refused); the directory then checks meaning (names free, references existing, CIDRs and
vendor rules). Their JSON Schemas go into the OpenAPI document as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from garrison.domain.request_fields import EXTRA_FIELD_NAME, MAX_EXTRA_FIELDS
from garrison.domain.upstream_tls import TLS_PATH_MAX_CHARS
from garrison.identity.cert_binding import THUMBPRINT_CHARS
from garrison.policy.engine import ORG_POLICY_MAX_BYTES
from garrison.store.alerts import ALERT_NOTE_MAX_CHARS
from garrison.store.directory import (
    COMPARTMENTS_MAX,
    KEY_MAX_LIFETIME_S,
    KEY_MAX_NETWORKS,
    KEY_ROTATION_GRACE_MAX_S,
    NAME_MAX_CHARS,
    URL_MAX_CHARS,
)
from garrison.store.incidents import INCIDENT_NOTE_MAX_CHARS, INCIDENT_TITLE_MAX_CHARS
from garrison.store.locks import LOCK_TTL_MAX_S
from garrison.store.vendors import SEAT_LIMIT_MAX

# Free text an admin writes (reasons, agreement references): long enough for a sentence and a
# ticket number, short enough that the audit log stays a log.
TEXT_MAX_CHARS = 500
# Upstream credentials are API keys or tokens; a JWT with claims fits comfortably.
UPSTREAM_KEY_MAX_CHARS = 8192
# Dates an admin writes (contracts, reviews, an incident's start, an explained call) fall in
# the life of a deployment: nothing before 2000 is real, and 9999 leaves the year of headroom
# reports need to render a date plus a window (Python dates end at 9999-12-31).
MOMENT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
MOMENT_MAX = datetime(9999, 1, 1, tzinfo=UTC)

Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_CHARS)]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX_CHARS)]
Cidr = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Compartment = Annotated[str, StringConstraints(min_length=1, max_length=63)]
LevelName = Literal["public", "internal", "restricted", "critical"]
RoleName = Literal["security-admin", "auditor", "vendor-manager", "approver"]
Networks = Annotated[list[Cidr], Field(max_length=KEY_MAX_NETWORKS)]
Compartments = Annotated[list[Compartment], Field(max_length=COMPARTMENTS_MAX)]
ExtraField = Annotated[str, StringConstraints(pattern="^" + EXTRA_FIELD_NAME.pattern + "$")]
ExtraFields = Annotated[list[ExtraField], Field(max_length=MAX_EXTRA_FIELDS)]


def _bounded(moment: datetime) -> datetime:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if not MOMENT_MIN <= aware <= MOMENT_MAX:
        raise ValueError(f"must be between {MOMENT_MIN:%Y-%m-%d} and {MOMENT_MAX:%Y-%m-%d} (UTC)")
    return moment


# Every date in a request body: ISO 8601, bounded so that every later read can render it.
Moment = Annotated[datetime, AfterValidator(_bounded)]


def epoch(moment: datetime) -> float:
    """Seconds since the epoch; a time without a zone is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OrgCreate(Body):
    name: Name


class VendorCreate(Body):
    name: Name
    sponsor: Name = Field(description="Internal principal accountable for the vendor.")
    contract_start: Moment | None = Field(None, description="ISO 8601; default now.")
    contract_end: Moment = Field(description="ISO 8601; people and keys stop at it.")
    networks: Annotated[list[Cidr], Field(min_length=1, max_length=KEY_MAX_NETWORKS)]
    seat_limit: int = Field(ge=1, le=SEAT_LIMIT_MAX)
    ceiling: LevelName = "internal"
    ceiling_compartments: Compartments = []
    agreement_ref: Text = ""
    security_review_at: Moment | None = None


class VendorUpdate(Body):
    contract_end: Moment | None = None
    networks: Annotated[list[Cidr], Field(min_length=1, max_length=KEY_MAX_NETWORKS)] | None = None
    seat_limit: int | None = Field(None, ge=1, le=SEAT_LIMIT_MAX)
    ceiling: LevelName | None = None
    ceiling_compartments: Compartments | None = None
    agreement_ref: Text | None = None
    security_review_at: Moment | None = None


class StatusChange(Body):
    status: Literal["active", "suspended", "offboarded"]
    reason: Text = ""


class PrincipalCreate(Body):
    name: Name
    org: Name
    kind: Literal["human", "service"] = "human"
    clearance: LevelName = "internal"
    compartments: Compartments = []
    roles: Annotated[list[RoleName], Field(max_length=4)] = []
    # A service account's owner (a person; default: the caller).
    owner: Name | None = None
    # A person: also return a one-time enrollment code (when no second admin is needed).
    invite: bool = False


class PrincipalUpdate(Body):
    clearance: LevelName | None = None
    compartments: Compartments | None = None
    roles: Annotated[list[RoleName], Field(max_length=4)] | None = None
    status: Literal["active", "disabled"] | None = None

    def access_change(self) -> bool:
        return self.clearance is not None or self.compartments is not None or self.roles is not None


class KeyCreate(Body):
    principal: Name
    expires_in_s: float | None = Field(
        None, gt=0, le=KEY_MAX_LIFETIME_S, description="Lifetime in seconds (default 90 days)."
    )
    networks: Networks = []
    note: Annotated[str, StringConstraints(max_length=NAME_MAX_CHARS)] = ""
    canary: bool = False
    cert_thumbprint: (
        Annotated[str, StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{{THUMBPRINT_CHARS}}}$")] | None
    ) = Field(
        None,
        description="Bind the key to a client certificate: its x5t#S256 (base64url SHA-256 "
        "of the DER). The key is then taken only over TLS with that certificate.",
    )


class KeyCreateSelf(Body):
    expires_in_s: float | None = Field(
        None, gt=0, le=KEY_MAX_LIFETIME_S, description="Lifetime in seconds (default 90 days)."
    )
    networks: Networks = []
    note: Annotated[str, StringConstraints(max_length=NAME_MAX_CHARS)] = ""


class Enroll(Body):
    code: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    expires_in_s: float | None = Field(
        None, gt=0, le=KEY_MAX_LIFETIME_S, description="Lifetime in seconds (default 90 days)."
    )
    networks: Networks = []
    note: Annotated[str, StringConstraints(max_length=NAME_MAX_CHARS)] = ""


class KeyRevoke(Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_CHARS)]


class KeyRotate(Body):
    grace_s: float = Field(0.0, ge=0, le=KEY_ROTATION_GRACE_MAX_S)
    # The directory keeps a rotation's reason to a name's length.
    reason: Annotated[str, StringConstraints(max_length=NAME_MAX_CHARS)] = ""


# A file path on the gateway's host (domain.upstream_tls checks it is absolute).
TlsPath = Annotated[str, StringConstraints(min_length=1, max_length=TLS_PATH_MAX_CHARS)]


class ModelCreate(Body):
    name: Name
    upstream_url: Annotated[str, StringConstraints(min_length=1, max_length=URL_MAX_CHARS)]
    upstream_model: Name | None = None
    api: Literal["openai", "anthropic"] = "openai"
    auth_style: Literal["bearer", "x-api-key", "none"] | None = None
    upstream_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=UPSTREAM_KEY_MAX_CHARS)] | None
    ) = Field(None, description="Sealed at rest; never returned or logged.")
    level: LevelName = "internal"
    compartments: Compartments = []
    extra_fields: ExtraFields = Field(
        [], description="Request fields beyond the API's documented ones this upstream may get."
    )
    tls_ca_file: TlsPath | None = Field(
        None, description="CA bundle (PEM) the upstream's certificate must chain to."
    )
    tls_client_cert_file: TlsPath | None = Field(
        None, description="Client certificate (PEM) presented to the upstream."
    )
    tls_client_key_file: TlsPath | None = Field(
        None, description="Its private key (PEM, unencrypted, readable by the gateway)."
    )


class ModelUpdate(Body):
    upstream_url: (
        Annotated[str, StringConstraints(min_length=1, max_length=URL_MAX_CHARS)] | None
    ) = None
    upstream_model: Name | None = None
    api: Literal["openai", "anthropic"] | None = None
    auth_style: Literal["bearer", "x-api-key", "none"] | None = None
    upstream_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=UPSTREAM_KEY_MAX_CHARS)] | None
    ) = Field(None, description="Replace the upstream credential.")
    clear_upstream_key: bool = False
    level: LevelName | None = None
    compartments: Compartments | None = None
    extra_fields: ExtraFields | None = Field(None, description="Replace the allowed extra fields.")
    tls_ca_file: TlsPath | None = Field(None, description="Replace the CA bundle.")
    tls_client_cert_file: TlsPath | None = Field(None, description="Replace the client cert.")
    tls_client_key_file: TlsPath | None = Field(None, description="Replace its private key.")
    clear_upstream_tls: bool = Field(False, description="Back to the system's CAs, no client cert.")


class LockCreate(Body):
    kind: Literal["credential", "principal", "vendor", "model", "network", "all"]
    target: Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_CHARS)] = Field(
        description="Key id, principal, vendor or org, model (name or id), CIDR; '*' for all."
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_CHARS)]
    ttl_s: float | None = Field(None, gt=0, le=LOCK_TTL_MAX_S, description="Ends by itself.")
    incident: Name | None = None


class LockLift(Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_CHARS)]


class VendorKeyRotation(Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_CHARS)]


class IncidentOpen(Body):
    title: Annotated[str, StringConstraints(min_length=1, max_length=INCIDENT_TITLE_MAX_CHARS)]
    since: Moment | None = Field(None, description="Start of the window (default now).")
    vendors: Annotated[list[Name], Field(max_length=16)] = []
    principals: Annotated[list[Name], Field(max_length=64)] = []
    credentials: Annotated[list[Name], Field(max_length=256)] = []


class IncidentUpdate(Body):
    status: Literal["open", "contained", "resolved", "closed"] | None = None
    note: (
        Annotated[str, StringConstraints(min_length=1, max_length=INCIDENT_NOTE_MAX_CHARS)] | None
    ) = None


class AccessRequestCreate(Body):
    model: Name
    # Bounded by the model's level after the decision (a bound here would tell a caller that
    # a model exists).
    duration_s: float = Field(
        gt=0, description="How long the grant should last (seconds; the model's level limits it)."
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_CHARS)]


class ReasonBody(Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_CHARS)]


class PolicyProposal(Body):
    text: Annotated[str, StringConstraints(max_length=ORG_POLICY_MAX_BYTES)] = Field(
        description="The organisation's whole Cedar policy set (replaces the one in force)."
    )


class PolicyExplain(Body):
    principal: Name
    model: Name
    address: Cidr | None = Field(None, description="Client address (default: any allowed).")
    at: Moment | None = Field(None, description="The time of the call (default now).")
    justification: bool = False


class AlertUpdate(Body):
    note: Annotated[str, StringConstraints(max_length=ALERT_NOTE_MAX_CHARS)] | None = None
