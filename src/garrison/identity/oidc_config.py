"""The ``[identity.oidc]`` configuration: which OpenID providers people sign in through.

    [identity.oidc]                          # the organisation's own provider
    issuer = "https://idp.example.com"       # exactly the ``iss`` of its ID tokens
    client_id = "garrison"
    client_secret_env = "GARRISON_OIDC_SECRET"   # optional: the CLI reads the secret from here
    scopes = ["openid", "email", "groups"]
    person_claim = "email"                   # names the person in the record (never matched)
    groups_claim = "groups"
    algorithms = ["RS256", "ES256"]          # ID-token signature algorithms accepted
    role_groups = { "security-admin" = "garrison-admins" }   # a role kept only while in the group
    require_nonce = true                     # false: accept device-flow tokens without a nonce

    [identity.oidc.acme]                     # a vendor's own provider, bound to vendor "acme"
    issuer = "https://login.acme.example"
    client_id = "garrison-acme"

A vendor's provider (a sub-table named for the vendor) can only ever assert that vendor's
people, and never maps to any role. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from garrison.config_keys import check_keys
from garrison.domain.roles import Role
from garrison.errors import ConfigError

# Signature algorithms an ID token may use. Asymmetric only: "none" and the HMAC family are
# never accepted (an HS256 token "signed" with the provider's public key is the classic
# confusion attack), whatever a provider's discovery document claims to support.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)
DEFAULT_ALGORITHMS = ("RS256", "ES256")
DEFAULT_SCOPES = ("openid", "email", "groups")
# The client-secret variable's name must start with this: the CLI learns the name from the
# gateway, and reads only variables of its own (never another tool's, e.g. a cloud key).
CLIENT_SECRET_ENV_PREFIX = "GARRISON_"  # noqa: S105 - a name prefix, not a secret
# The amr values that count as multi-factor (RFC 8176 names; "mfa" is the generic one).
DEFAULT_MFA_AMR = ("mfa", "otp", "hwk", "swk", "fido", "sc")

_KEYS = frozenset(
    {
        "issuer",
        "client_id",
        "client_secret_env",
        "scopes",
        "person_claim",
        "groups_claim",
        "algorithms",
        "role_groups",
        "mfa_amr",
        "mfa_acr",
        "require_nonce",
    }
)


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """One configured provider. ``vendor`` names the vendor org it is bound to (None: the
    organisation's own provider)."""

    issuer: str
    client_id: str
    # The environment variable the CLI reads a client secret from, for providers that want
    # one even from native apps (the gateway never needs it: it only verifies ID tokens).
    client_secret_env: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    person_claim: str = "sub"
    groups_claim: str = "groups"
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # role → the provider group a person must be in to keep that role for a session.
    role_groups: Mapping[str, str] = field(default_factory=dict)
    mfa_amr: tuple[str, ...] = DEFAULT_MFA_AMR
    # acr values that count as MFA on their own (for providers that send acr, not amr).
    mfa_acr: tuple[str, ...] = ()
    # An ID token must carry the nonce the CLI asked for (naming its DPoP key). The device
    # flow (RFC 8628) has no nonce and most providers drop it there: false lets such tokens
    # through (single use and minutes old still hold; a nonce present must still match).
    require_nonce: bool = True
    vendor: str | None = None

    @property
    def name(self) -> str:
        return self.vendor or "default"


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """Every configured provider; empty when OIDC is not configured (the embedded default:
    people use enrolled keys, and approvals carry no MFA)."""

    providers: tuple[OidcProvider, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    def by_issuer(self, issuer: str) -> OidcProvider | None:
        for provider in self.providers:
            if provider.issuer == issuer:
                return provider
        return None

    def by_name(self, name: str) -> OidcProvider | None:
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def _text(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _flag(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key, True)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _issuer(table: Mapping[str, Any], where: str) -> str:
    issuer = _text(table, "issuer", where)
    parts = urlsplit(issuer)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ConfigError(f"{where}: issuer must be an https:// URL (http:// only on loopback)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: issuer must have no query or fragment")
    return issuer


def _provider(table: Mapping[str, Any], where: str, vendor: str | None) -> OidcProvider:
    check_keys(table, _KEYS, where)
    secret_env = table.get("client_secret_env")
    if secret_env is not None:
        secret_env = _text(table, "client_secret_env", where)
        if not secret_env.startswith(CLIENT_SECRET_ENV_PREFIX):
            raise ConfigError(
                f"{where}: client_secret_env must name a {CLIENT_SECRET_ENV_PREFIX}* variable"
            )
    algorithms = _strings(table.get("algorithms", list(DEFAULT_ALGORITHMS)), where, "algorithms")
    refused = sorted(set(algorithms) - ALLOWED_ALGORITHMS)
    if refused:
        raise ConfigError(
            f"{where}: algorithms {refused} are not accepted; use asymmetric ones from "
            f"{sorted(ALLOWED_ALGORITHMS)}"
        )
    role_groups = table.get("role_groups", {})
    if not isinstance(role_groups, dict) or not all(
        isinstance(v, str) and v for v in role_groups.values()
    ):
        raise ConfigError(f"{where}: role_groups must map role names to group names")
    known_roles = {r.value for r in Role}
    for role in role_groups:
        if role not in known_roles:
            raise ConfigError(f"{where}: role_groups: unknown role {role!r}")
    if vendor is not None and role_groups:
        raise ConfigError(f"{where}: a vendor's provider never maps to any role (no role_groups)")
    scopes = _strings(table.get("scopes", list(DEFAULT_SCOPES)), where, "scopes")
    if "openid" not in scopes:
        raise ConfigError(f"{where}: scopes must include 'openid'")
    return OidcProvider(
        issuer=_issuer(table, where),
        client_id=_text(table, "client_id", where),
        client_secret_env=secret_env,
        scopes=scopes,
        person_claim=_text(table, "person_claim", where, "sub"),
        groups_claim=_text(table, "groups_claim", where, "groups"),
        algorithms=algorithms,
        role_groups=dict(role_groups),
        mfa_amr=_strings(table.get("mfa_amr", list(DEFAULT_MFA_AMR)), where, "mfa_amr"),
        mfa_acr=_strings(table["mfa_acr"], where, "mfa_acr") if "mfa_acr" in table else (),
        require_nonce=_flag(table, "require_nonce", where),
        vendor=vendor,
    )


def parse_oidc(table: Any, where: str) -> OidcSettings:
    """``[identity.oidc]`` (with ``[identity.oidc.<vendor>]`` sub-tables) → OidcSettings."""
    if table is None:
        return OidcSettings()
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [identity.oidc] must be a table")
    own = {k: v for k, v in table.items() if not isinstance(v, dict) or k == "role_groups"}
    vendors = {k: v for k, v in table.items() if isinstance(v, dict) and k != "role_groups"}
    providers: list[OidcProvider] = []
    if own:
        providers.append(_provider(own, f"{where}: [identity.oidc]", None))
    for vendor, sub in vendors.items():
        providers.append(_provider(sub, f"{where}: [identity.oidc.{vendor}]", vendor))
    issuers = [p.issuer for p in providers]
    if len(set(issuers)) != len(issuers):
        raise ConfigError(f"{where}: two [identity.oidc] providers share one issuer")
    return OidcSettings(tuple(providers))
