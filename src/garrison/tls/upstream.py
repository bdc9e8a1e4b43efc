"""The SSL context for each upstream TLS setting (a model's own CA bundle and client
certificate), built once per distinct setting and cached.

The gateway keeps one client session; aiohttp pools connections per (host, port, SSL
context), so models with different settings never share a connection. A cached context is
rebuilt when its files change (checked at most every ``UPSTREAM_TLS_CHECK_S``). Files that
do not load fail the call with a 502 (audited) and one error line for the operator, never
the system's CAs in their place.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from garrison.domain import Model
from garrison.domain.upstream_tls import UpstreamTls
from garrison.errors import BadRequest, ConfigError, UpstreamFailed
from garrison.tls.listener import MIN_TLS_VERSION, Stamp, check_pem_file, file_stamp, load_pair

log = logging.getLogger("garrison.gateway")

# How often a cached context's files are looked at again (three stat calls): a renewed client
# certificate or CA bundle is used within this.
UPSTREAM_TLS_CHECK_S = 5.0
# Distinct settings kept: one per model at most; past this the oldest is dropped (and built
# again when next used), so a registry churned by an admin cannot grow memory without bound.
MAX_UPSTREAM_TLS_CONTEXTS = 256


def client_context(tls: UpstreamTls) -> ssl.SSLContext:
    """Verifying context: only ``ca_file``'s CAs when set (else the system's), host names
    checked, TLS 1.2 at least, the client certificate when set. ConfigError names the field."""
    if tls.ca_file is not None:
        ca = Path(tls.ca_file)
        check_pem_file(ca, "tls_ca_file")
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except FileNotFoundError:
            raise ConfigError(f"tls_ca_file {ca}: no such file") from None
        except PermissionError:
            raise ConfigError(f"tls_ca_file {ca}: cannot be read (permission denied)") from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"tls_ca_file {ca}: not a PEM CA bundle ({exc})") from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = MIN_TLS_VERSION
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        load_pair(
            context,
            Path(tls.client_cert_file),
            Path(tls.client_key_file),
            ("tls_client_cert_file", "tls_client_key_file"),
        )
    return context


def check_tls_files(tls: UpstreamTls | None) -> None:
    """At registration: the files load now (BadRequest in the admin's terms if not)."""
    if tls is None:
        return
    try:
        client_context(tls)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None


@dataclass(slots=True)
class _Entry:
    context: ssl.SSLContext
    stamp: Stamp
    checked_at: float


@dataclass(slots=True)
class UpstreamTlsContexts:
    _cache: dict[UpstreamTls, _Entry] = field(default_factory=dict)

    def for_model(self, model: Model) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` gets: True (default verification) or the model's context.
        UpstreamFailed when its files do not load."""
        tls = model.upstream_tls
        if tls is None:
            return True
        now = time.monotonic()
        entry = self._cache.get(tls)
        if entry is not None and now - entry.checked_at < UPSTREAM_TLS_CHECK_S:
            return entry.context
        paths = [Path(p) for p in tls.files() if p is not None]
        stamp = file_stamp(*paths)
        if entry is not None and entry.stamp == stamp:
            entry.checked_at = now
            return entry.context
        try:
            context = client_context(tls)
        except ConfigError as exc:
            self._cache.pop(tls, None)
            log.error("upstream TLS for model %s does not load: %s", model.name, exc)
            raise UpstreamFailed(f"upstream TLS files do not load: {exc}") from None
        if len(self._cache) >= MAX_UPSTREAM_TLS_CONTEXTS and tls not in self._cache:
            self._cache.pop(next(iter(self._cache)))
        self._cache[tls] = _Entry(context, stamp, now)
        return context

    def __len__(self) -> int:
        return len(self._cache)
