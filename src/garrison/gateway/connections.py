"""Client connections: how many one source may hold, and a reserve for health and admin.

A connection costs a file descriptor before anything is known about who opened it, so
they are counted per source address as they are accepted (IPv6 sources per /64: one host
usually owns the whole prefix). A connection over its source's cap, or over the process
cap, is dropped at once. A trusted proxy carries many clients and gets its own, larger
cap. The last ``connection_reserve`` connections of the process cap are *reserve*
connections: they serve only ``/healthz``, ``/readyz``, ``/metrics`` and the admin API
(the data plane gets 503 and the connection is closed), so operators can still look and
lock while the data plane's connections are full.

Idle connections are bounded by time elsewhere: ``header_read_timeout_s`` (a head must
arrive) and ``keepalive_timeout_s`` (idle between requests, re-armed after each one).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from garrison.admin_wire import ADMIN_PREFIX
from garrison.domain import Network, UpstreamApi
from garrison.errors import Overloaded
from garrison.gateway.apis import error_body

if TYPE_CHECKING:
    from garrison.gateway.limits import GatewayLimits

# Connections from one source address: an office behind one NAT address running SDK pools
# (100 connections each) fits twice over; 20,000 idle sockets from one address do not.
MAX_CONNECTIONS_PER_SOURCE = 256
# Connections from one trusted proxy (it carries every client behind it): the process's
# whole data-plane share, minus room for a second proxy's failover.
MAX_CONNECTIONS_PER_TRUSTED_PROXY = 6144
# Client connections in one process: 1,000 streams is the design point, and each also holds
# an upstream socket; the descriptor limit must cover twice this plus the database's.
MAX_CONNECTIONS = 8192
# Of MAX_CONNECTIONS, the last this many serve only health checks and the admin API.
CONNECTION_RESERVE = 64
# IPv6 sources are counted per prefix of this length (a host is handed a whole /64).
IPV6_SOURCE_PREFIX = 64

# Paths a reserve connection serves.
RESERVE_PATHS = ("/healthz", "/readyz", "/metrics")


class Admit(enum.Enum):
    SERVE = "serve"  # a normal connection
    RESERVE = "reserve"  # health and admin only
    REFUSE = "refuse"  # dropped at once


def source_of(host: str | None) -> str:
    """The key a connection's peer address is counted under."""
    if host is None:
        return "?"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # a Unix socket path or similar: counted as itself
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        network = ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False)
        return str(network)
    return str(address)


@dataclass(slots=True)
class ConnectionTable:
    """Open client connections, per source and in total (event loop only)."""

    limits: GatewayLimits
    trusted_proxies: Sequence[Network] = ()
    total: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    # Connections dropped at accept, for /metrics.
    refused: int = 0

    def admit(self, host: str | None) -> tuple[Admit, str]:
        source = source_of(host)
        limits = self.limits
        cap = (
            limits.max_connections_per_trusted_proxy
            if self._trusted(host)
            else limits.max_connections_per_source
        )
        if self.total >= limits.max_connections or self.by_source[source] >= cap:
            self.refused += 1
            return Admit.REFUSE, source
        self.total += 1
        self.by_source[source] += 1
        if self.total > limits.max_connections - limits.connection_reserve:
            return Admit.RESERVE, source
        return Admit.SERVE, source

    def leave(self, source: str) -> None:
        self.total -= 1
        self.by_source[source] -= 1
        if self.by_source[source] <= 0:
            del self.by_source[source]

    def _trusted(self, host: str | None) -> bool:
        if not self.trusted_proxies or host is None:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


def reserve_path(path: str) -> bool:
    return path in RESERVE_PATHS or path.startswith(ADMIN_PREFIX + "/")


# Set on the protocol of a reserve connection (read by the middleware below).
RESERVE_ATTRIBUTE = "garrison_reserve"


def reserve_refusal(request: web.Request) -> web.Response | None:
    """On a reserve connection, only health checks and the admin API are served: a 503 (and
    the connection closed) for anything else; None: serve it. Checked first by the app's one
    middleware (``app.error_middleware``), before the route is run."""
    if getattr(request.protocol, RESERVE_ATTRIBUTE, False) and not reserve_path(request.path):
        api = UpstreamApi.ANTHROPIC if request.path == "/v1/messages" else UpstreamApi.OPENAI
        response = web.Response(
            status=503,
            body=error_body(api, Overloaded("connection reserve")),
            content_type="application/json",
        )
        response.force_close()
        return response
    return None


__all__ = [
    "CONNECTION_RESERVE",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_SOURCE",
    "MAX_CONNECTIONS_PER_TRUSTED_PROXY",
    "Admit",
    "ConnectionTable",
    "reserve_refusal",
    "source_of",
]
