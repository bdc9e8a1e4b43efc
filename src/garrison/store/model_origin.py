"""Where a model's traffic goes, normalised, and whether a new model would share it with a
better-protected one.

Two models whose upstream URLs reach the same server are the same model as far as access
goes: registering a ``public`` model pointing at a critical model's server (a different
spelling of the host, its address, a trailing dot, another path) hands everyone the critical
model. An origin is (scheme, the addresses the host resolves to, port); two origins are
shared when scheme and port are equal and the hosts share a name or an address.

A host that cannot be resolved when the model is added is treated as possibly shared (it
may resolve to anything later): adding it takes two admins.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa

from garrison.domain import Level
from garrison.store import schema
from garrison.store.columns import parse_compartments

# The origin check's name lookups (all at once) wait at most this long; a slower answer
# counts as "cannot resolve" (two admins), never as "not shared".
RESOLVE_TIMEOUT_S = 2.0
# Addresses kept per host: a name with more is a CDN or a misuse; the first ones decide.
ADDRESSES_PER_HOST_MAX = 64
# Lookups run at once: a registry's few dozen upstream hosts resolve within one timeout.
RESOLVE_PARALLEL_MAX = 16

_DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[[str], frozenset[str] | None]


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # lower-case, no trailing dot
    port: int
    addresses: frozenset[str]  # normalised addresses; empty when the name did not resolve
    resolved: bool

    def shared_with(self, other: Origin) -> bool:
        if (self.scheme, self.port) != (other.scheme, other.port):
            return False
        return self.host == other.host or bool(self.addresses & other.addresses)


def _literal(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return str(address)


def _addresses(host: str) -> frozenset[str] | None:
    """The host's addresses from the system resolver (blocking; None: no answer)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    found: list[str] = []
    for info in infos:
        normal = _literal(str(info[4][0]).split("%", 1)[0])
        if normal is not None and normal not in found:
            found.append(normal)
    return frozenset(found[:ADDRESSES_PER_HOST_MAX])


def resolve_all(
    hosts: Iterable[str], resolve: Resolver = _addresses
) -> dict[str, frozenset[str] | None]:
    """Every host looked up at once, all within one ``RESOLVE_TIMEOUT_S`` (late: None)."""
    wanted = sorted(set(hosts))
    if not wanted:
        return {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(len(wanted), RESOLVE_PARALLEL_MAX))
    try:
        futures = {host: pool.submit(resolve, host) for host in wanted}
        done, _ = concurrent.futures.wait(futures.values(), timeout=RESOLVE_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return {host: f.result() if f in done else None for host, f in futures.items()}


def system_resolver(host: str) -> frozenset[str] | None:
    """The host's addresses (None: it did not resolve within ``RESOLVE_TIMEOUT_S``)."""
    return resolve_all([host])[host]


def origin_of(url: str, resolve: Resolver = system_resolver) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = 0
    literal = _literal(host)
    if literal is not None:
        return Origin(scheme, literal, port, frozenset({literal}), True)
    addresses = resolve(host)
    return Origin(scheme, host, port, addresses or frozenset(), addresses is not None)


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    upstream_url: str
    level: Level
    compartments: frozenset[str]


def registered(conn: sa.Connection) -> list[Registered]:
    m = schema.models
    rows = conn.execute(sa.select(m.c.name, m.c.upstream_url, m.c.level, m.c.compartments))
    return [
        Registered(r.name, r.upstream_url, Level(r.level), parse_compartments(r.compartments))
        for r in rows
    ]


def creation_needs_two(
    url: str,
    level: Level,
    existing: Iterable[Registered],
    resolve: Resolver = system_resolver,
) -> str | None:
    """Why adding a model at ``url`` and ``level`` takes two admins, or None.

    Two admins: a model at ``restricted`` or above; a host that does not resolve; an origin
    already used by a model at a higher level or with compartments.
    """
    if level >= Level.RESTRICTED:
        return f"a model at {level.label} takes two admins"
    protected = [m for m in existing if m.level > level or m.compartments]
    urls = [url, *(m.upstream_url for m in protected)]
    hosts = [h for h in map(_host_of, urls) if _literal(h) is None]
    found = resolve_all(hosts, resolve)
    origin = origin_of(url, found.__getitem__)
    if not origin.resolved:
        return f"its host {origin.host!r} does not resolve, so it may share another's server"
    for model in protected:
        theirs = origin_of(model.upstream_url, found.__getitem__)
        what = f"model {model.name!r} ({model.level.label}"
        what += ", in compartments)" if model.compartments else ")"
        if not theirs.resolved:
            return f"the host of {what} does not resolve, so it cannot be told apart"
        if origin.shared_with(theirs):
            return f"its upstream is the server of {what}"
    return None


def _host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".").lower()
