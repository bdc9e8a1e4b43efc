"""Which sections and keys a configuration file may hold: anything else is refused.

A typo (``prot = 8080``, ``[limts]``) must not load silently and leave the setting at its
default; the error names the key, its section and the file, and a close known name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from garrison.errors import ConfigError

# garrison.toml: section → the keys it may hold. ``[limits]`` is checked against
# GatewayLimits' fields by garrison.config itself.
CONFIG_SECTIONS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset(
        {
            "host",
            "port",
            "trusted_proxies",
            "forwarded_header",
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
        }
    ),
    "storage": frozenset({"database_url", "key_dir", "redis_url", "redis_prefix"}),
    "limits": frozenset(),
    "audit": frozenset({"witness_dir", "fail_open", "jsonl_path", "syslog", "capture_bodies"}),
    "detect": frozenset({"enabled", "rules"}),
    "alerts": frozenset(
        {"webhook_url", "webhook_secret_env", "jsonl_path", "syslog", "min_severity"}
    ),
    "locks": frozenset({"stale_mode"}),
    "admin": frozenset(
        {"url", "credential_file", "listen", "public_url", "client_cert_file", "client_key_file"}
    ),
    "metrics": frozenset({"listen", "model_labels"}),
    "tracing": frozenset({"otlp_endpoint"}),
    # "oidc" is the sign-in providers' table, checked by the OIDC settings themselves.
    "identity": frozenset(
        {"public_url", "people_bearer_keys", "mfa_from_level", "mfa_amr_by_level", "oidc"}
    ),
}
# Sections whose keys are checked elsewhere (against a dataclass's fields).
_CHECKED_ELSEWHERE = frozenset({"limits"})


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse the first key of ``table`` not in ``known``, naming it and ``where`` it is."""
    allowed = set(known)
    for key in table:
        if key not in allowed:
            listing = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"{where}: unknown key {key!r}{_hint(key, allowed)}; known: {listing}"
            )


def check_config_document(data: Mapping[str, Any], path: str) -> None:
    """Every top-level name is a known section holding a table of known keys."""
    for name, table in data.items():
        if name not in CONFIG_SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{name}]{_hint(name, CONFIG_SECTIONS)}; "
                f"known: {', '.join(f'[{s}]' for s in CONFIG_SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        if name not in _CHECKED_ELSEWHERE:
            check_keys(table, CONFIG_SECTIONS[name], f"{path}: [{name}]")
