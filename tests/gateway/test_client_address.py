"""Tests for ``garrison.gateway.client_address``: whom to believe in X-Forwarded-For."""

from __future__ import annotations

import ipaddress

import pytest

from garrison.gateway.client_address import MAX_FORWARDED_HOPS, client_address, parse_address

ip = ipaddress.ip_address
PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
PROXY = ip("10.0.0.1")
OUTSIDER = ip("198.51.100.9")


def test_no_header_gives_the_peer() -> None:
    assert client_address(PROXY, None, PROXIES) == PROXY


def test_empty_header_gives_the_peer() -> None:
    assert client_address(PROXY, "", PROXIES) == PROXY


def test_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address(OUTSIDER, "203.0.113.5", PROXIES) == OUTSIDER


def test_header_is_ignored_when_no_proxy_is_trusted() -> None:
    assert client_address(PROXY, "203.0.113.5", ()) == PROXY


def test_single_hop_from_a_trusted_proxy_is_the_client() -> None:
    assert client_address(PROXY, "203.0.113.5", PROXIES) == ip("203.0.113.5")


def test_rightmost_untrusted_hop_is_the_client() -> None:
    # The leftmost entry is whatever the client chose to write: never believed.
    assert client_address(PROXY, "1.2.3.4, 203.0.113.5", PROXIES) == ip("203.0.113.5")


def test_chain_of_trusted_proxies_is_skipped() -> None:
    header = "1.2.3.4, 203.0.113.5, 10.9.9.9, 10.8.8.8"
    assert client_address(PROXY, header, PROXIES) == ip("203.0.113.5")


def test_trusted_ipv6_proxy_in_the_chain_is_skipped() -> None:
    header = "203.0.113.5, fd00::7"
    assert client_address(ip("fd00::1"), header, PROXIES) == ip("203.0.113.5")


def test_ipv6_client_is_returned() -> None:
    assert client_address(PROXY, "2001:db8::5", PROXIES) == ip("2001:db8::5")


def test_header_of_only_trusted_proxies_gives_the_leftmost_of_them() -> None:
    assert client_address(PROXY, "10.1.1.1, 10.2.2.2", PROXIES) == ip("10.1.1.1")


def test_garbled_rightmost_entry_gives_the_peer() -> None:
    assert client_address(PROXY, "203.0.113.5, not-an-ip", PROXIES) == PROXY


def test_garbled_entry_stops_the_walk_at_the_last_trusted_hop() -> None:
    header = "203.0.113.5, garbage, 10.7.7.7"
    assert client_address(PROXY, header, PROXIES) == ip("10.7.7.7")


def test_address_left_of_a_garbled_entry_is_never_believed() -> None:
    assert client_address(PROXY, "203.0.113.5, , 10.7.7.7", PROXIES) != ip("203.0.113.5")


@pytest.mark.parametrize("entry", ["203.0.113.5:443", "[2001:db8::5]", "unknown", "_hidden"])
def test_non_address_entries_are_garbled(entry: str) -> None:
    assert client_address(PROXY, entry, PROXIES) == PROXY


def test_whitespace_around_entries_is_ignored() -> None:
    assert client_address(PROXY, "  203.0.113.5  ,\t10.2.2.2 ", PROXIES) == ip("203.0.113.5")


def test_ipv4_mapped_ipv6_entry_is_normalised_to_ipv4() -> None:
    assert client_address(PROXY, "::ffff:203.0.113.5", PROXIES) == ip("203.0.113.5")


def test_ipv4_mapped_trusted_proxy_entry_is_recognised_as_trusted() -> None:
    header = "203.0.113.5, ::ffff:10.3.3.3"
    assert client_address(PROXY, header, PROXIES) == ip("203.0.113.5")


def test_parse_address_normalises_ipv4_mapped_ipv6() -> None:
    assert parse_address("::ffff:10.0.0.1") == ip("10.0.0.1")


@pytest.mark.parametrize("text", ["", "nope", "10.0.0", "10.0.0.256", "1.2.3.4/32"])
def test_parse_address_rejects_non_addresses(text: str) -> None:
    assert parse_address(text) is None


def test_parse_address_strips_whitespace() -> None:
    assert parse_address(" 2001:db8::5 ") == ip("2001:db8::5")


def test_hops_beyond_the_limit_are_not_looked_at() -> None:
    trusted = ", ".join(f"10.0.0.{i}" for i in range(1, MAX_FORWARDED_HOPS + 1))
    header = f"203.0.113.5, {trusted}"
    assert client_address(PROXY, header, PROXIES) != ip("203.0.113.5")


def test_hop_limit_stops_at_the_leftmost_hop_looked_at() -> None:
    trusted = [f"10.0.0.{i}" for i in range(1, MAX_FORWARDED_HOPS + 1)]
    header = ", ".join(["203.0.113.5", *trusted])
    assert client_address(PROXY, header, PROXIES) == ip(trusted[0])


def test_client_within_the_hop_limit_is_found() -> None:
    trusted = ", ".join(f"10.0.0.{i}" for i in range(1, MAX_FORWARDED_HOPS))
    header = f"203.0.113.5, {trusted}"
    assert client_address(PROXY, header, PROXIES) == ip("203.0.113.5")
