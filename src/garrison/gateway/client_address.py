"""The client's address: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy.

Only the entries added by trusted proxies are believed: walking the header from the right,
the first address that is not a trusted proxy is the client. A header from an untrusted peer
is ignored entirely (anyone can write one).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from garrison.domain import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Entries looked at in X-Forwarded-For; a real chain of proxies is a handful long.
MAX_FORWARDED_HOPS = 16
# Distinct addresses whose parse is remembered; bounded so a spray of sources cannot grow it.
PARSED_ADDRESS_CACHE = 4096


@functools.lru_cache(maxsize=PARSED_ADDRESS_CACHE)
def parse_address(text: str) -> Address | None:
    """Parse once per distinct address (cached): clients keep coming from the same few."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: Address, proxies: Sequence[Network]) -> bool:
    return any(addr in net for net in proxies)


def client_address(peer: Address, forwarded_for: str | None, proxies: Sequence[Network]) -> Address:
    if not forwarded_for or not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h for h in forwarded_for.split(",")][-MAX_FORWARDED_HOPS:]
    client = peer
    for hop in reversed(hops):
        addr = parse_address(hop)
        if addr is None:
            # A garbled entry: trust nothing to its left; the last trusted hop stands.
            return client
        client = addr
        if not _trusted(addr, proxies):
            return addr
    return client
