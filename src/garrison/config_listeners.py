"""The listener settings of a configuration file: the addresses to listen on, the TLS
files (server certificate and key, client-certificate CA) and which proxies' forwarding
headers to believe. Each function reads one setting's value from its TOML table and raises
``ConfigError`` naming the file, the section and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from garrison.domain import Network
from garrison.domain.networks import parse_listen, parse_network
from garrison.edge.client_address import ForwardedHeader
from garrison.errors import ConfigError


def trusted_proxies(values: Any, where: str) -> tuple[Network, ...]:
    """[gateway] trusted_proxies: a list of CIDRs (or, from the environment, comma-separated)."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, list):
        raise ConfigError(f"{where}: trusted_proxies must be a list of CIDRs")
    try:
        return tuple(parse_network(str(v)) for v in values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def forwarded_header(table: Mapping[str, Any], path: Path) -> ForwardedHeader:
    """[gateway] forwarded_header: which header the trusted proxies append to."""
    value = table.get("forwarded_header", ForwardedHeader.X_FORWARDED_FOR.value)
    try:
        return ForwardedHeader(str(value).lower())
    except ValueError:
        known = ", ".join(h.value for h in ForwardedHeader)
        raise ConfigError(f"{path}: [gateway] forwarded_header must be one of {known}") from None


def tls_files(table: Mapping[str, Any], path: Path, base: Path) -> tuple[Path | None, Path | None]:
    """[gateway] tls_cert_file and tls_key_file: both or neither (relative to the file)."""
    found: list[Path | None] = []
    for name in ("tls_cert_file", "tls_key_file"):
        value = table.get(name, "")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: [gateway] {name} must be a file path")
        file = Path(value) if value.strip() else None
        found.append(file if file is None or file.is_absolute() else base / file)
    cert, key = found
    if (cert is None) != (key is None):
        raise ConfigError(f"{path}: [gateway] tls_cert_file and tls_key_file go together")
    return cert, key


def client_ca_file(
    table: Mapping[str, Any], cert: Path | None, path: Path, base: Path
) -> Path | None:
    """[gateway] tls_client_ca_file: a CA bundle for client certificates; only with TLS."""
    value = table.get("tls_client_ca_file", "")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: [gateway] tls_client_ca_file must be a file path")
    if not value.strip():
        return None
    if cert is None:
        raise ConfigError(
            f"{path}: [gateway] tls_client_ca_file needs tls_cert_file and tls_key_file "
            "(client certificates travel only in a TLS handshake)"
        )
    file = Path(value)
    return file if file.is_absolute() else base / file


def listen_address(table: Mapping[str, Any], section: str, path: Path) -> str | None:
    """A section's ``listen`` address (``host:port``), or None when unset or empty."""
    value = table.get("listen", "")
    if not isinstance(value, str):
        raise ConfigError(f'{path}: [{section}] listen must be a string like "127.0.0.1:9464"')
    if not value.strip():
        return None
    try:
        parse_listen(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: [{section}] {exc}") from None
    return value.strip()
