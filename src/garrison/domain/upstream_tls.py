"""How the gateway reaches one upstream over TLS: its own CA bundle and an optional client
certificate. Pure: the shape and the rules; the files are read by garrison.tls.upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from garrison.errors import BadRequest

# A path an admin names: long enough for any real layout, short enough to show in one line.
TLS_PATH_MAX_CHARS = 1024
# The model fields, as the admin API, the CLI and the audit records spell them.
TLS_FIELDS = ("tls_ca_file", "tls_client_cert_file", "tls_client_key_file")


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """Hashable: one SSL context per distinct setting (gateway.upstream_tls caches them)."""

    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def as_fields(self) -> dict[str, str | None]:
        return dict(zip(TLS_FIELDS, self.files(), strict=True))

    def files(self) -> tuple[str | None, str | None, str | None]:
        return (self.ca_file, self.client_cert_file, self.client_key_file)


def _path(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: must be a file path")
    if len(value) > TLS_PATH_MAX_CHARS:
        raise BadRequest(f"{field}: longer than {TLS_PATH_MAX_CHARS} characters")
    if "\x00" in value or any(ord(c) < 32 for c in value):
        raise BadRequest(f"{field}: control characters are not allowed in a path")
    if not PurePosixPath(value).is_absolute():
        # The gateway and the admin CLI run in different directories: only absolute paths
        # mean the same file to both.
        raise BadRequest(f"{field}: must be an absolute path (got {value!r})")
    return value


def check_upstream_tls(
    upstream_url: str,
    ca_file: Any = None,
    client_cert_file: Any = None,
    client_key_file: Any = None,
) -> UpstreamTls | None:
    """The setting an admin asked for, or None when none of the fields is set. Refuses a
    client certificate without its key (or the reverse) and TLS settings on a plain-HTTP
    upstream (they would be silently unused)."""
    tls = UpstreamTls(
        _path(ca_file, "tls_ca_file"),
        _path(client_cert_file, "tls_client_cert_file"),
        _path(client_key_file, "tls_client_key_file"),
    )
    if tls == UpstreamTls():
        return None
    if (tls.client_cert_file is None) != (tls.client_key_file is None):
        raise BadRequest("tls_client_cert_file and tls_client_key_file go together: give both")
    if urlsplit(upstream_url).scheme != "https":
        raise BadRequest("tls_* settings need an https:// upstream URL")
    return tls


def parse_upstream_tls(raw: dict[str, Any] | None) -> UpstreamTls | None:
    """The stored JSON object (or None) as the snapshot holds it."""
    if not raw:
        return None
    return UpstreamTls(
        raw.get("tls_ca_file"), raw.get("tls_client_cert_file"), raw.get("tls_client_key_file")
    )
