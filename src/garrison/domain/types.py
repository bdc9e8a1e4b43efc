"""Directory objects as frozen dataclasses: what the snapshot holds and the policy reads."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from garrison.domain.levels import Level
from garrison.domain.secret import Secret

if TYPE_CHECKING:
    from garrison.domain.upstream_tls import UpstreamTls
    from garrison.domain.vendor import VendorTerms

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OrgKind(enum.StrEnum):
    INTERNAL = "internal"
    VENDOR = "vendor"


class PrincipalKind(enum.StrEnum):
    HUMAN = "human"
    SERVICE = "service"


class Status(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class UpstreamApi(enum.StrEnum):
    """Which wire API the upstream speaks; decides which client endpoints can reach it."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class AuthStyle(enum.StrEnum):
    """How the upstream credential is presented to the upstream."""

    BEARER = "bearer"
    X_API_KEY = "x-api-key"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    kind: OrgKind
    # Set for vendors (kind VENDOR): the contract, networks, seats and ceiling.
    vendor: VendorTerms | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    name: str
    org_id: str
    kind: PrincipalKind
    clearance: Level
    compartments: frozenset[str]
    status: Status
    roles: frozenset[str] = frozenset()
    # A service account's owner (a person); a lock on the owner covers it.
    owner_id: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    """An API key. ``id`` is the public part of the key; only an HMAC of the secret is kept."""

    id: str
    principal_id: str
    secret_hash: bytes = field(repr=False)
    created_at: float
    expires_at: float | None
    networks: tuple[Network, ...]
    revoked: bool = False
    # A planted key: it works like any other, and any use of it is treated as an attack.
    canary: bool = False
    # Who created it and how (garrison.domain.provenance): "legacy" for keys from before.
    provenance: str = "legacy"
    created_by: str | None = None
    # A service account's key bound to a client certificate (RFC 8705 ``x5t#S256``: the
    # base64url SHA-256 of its DER): taken only over TLS with that certificate.
    cert_thumbprint: str | None = None

    def allows_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if not self.networks:
            return True
        return any(address in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class Model:
    """A client-facing model name and the upstream it is routed to."""

    id: str
    name: str
    upstream_url: str
    upstream_model: str
    api: UpstreamApi
    auth_style: AuthStyle
    level: Level
    compartments: frozenset[str]
    upstream_key: Secret | None = field(default=None, repr=False)
    # Calls must carry a justification header (x-garrison-justification), kept in the log.
    requires_justification: bool = False
    # Request fields beyond the API's documented ones this model's upstream may receive
    # (vLLM / llama.cpp sampling parameters), named by an admin; see domain.request_fields.
    extra_fields: frozenset[str] = frozenset()
    # Its own CA bundle and client certificate for an https upstream (None: the system's CAs).
    upstream_tls: UpstreamTls | None = None
