"""Networks and addresses in one canonical form: IPv4-mapped IPv6 is written as IPv4.

A client's address is compared in IPv4 form (``::ffff:127.10.0.5`` arrives as
``127.10.0.5``), so a network written in mapped form (``::ffff:127.10.0.0/112``) would never
match anything. Every network an admin or a file gives (key, vendor and lock networks,
trusted proxies) is parsed here, and a mapped one becomes the IPv4 network it means
(``127.10.0.0/16``). An IPv6 network wider than the mapped block (``::/0``) stays IPv6 and
covers IPv6 addresses only.
"""

from __future__ import annotations

import ipaddress

from garrison.domain.types import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# ::ffff:0:0/96, the IPv4-mapped block (RFC 4291 section 2.5.5.2).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_PREFIX = 96


def parse_network(text: str, *, strict: bool = True) -> Network:
    """A network in canonical form; ``ValueError`` if it is not one (``strict``: host bits
    set are an error, as in ``ipaddress.ip_network``)."""
    net = ipaddress.ip_network(text.strip(), strict=strict)
    return canonical_network(net)


def canonical_network(net: Network) -> Network:
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= _MAPPED_PREFIX:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None and net.subnet_of(_MAPPED):
            return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - _MAPPED_PREFIX}")
    return net


def parse_address(text: str) -> Address:
    """An address in canonical form (mapped IPv6 as IPv4); ``ValueError`` if it is not one."""
    return canonical_address(ipaddress.ip_address(text.strip()))


def canonical_address(addr: Address) -> Address:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ValueError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {text!r} is not host:port")
    return host.strip("[]"), int(port)
