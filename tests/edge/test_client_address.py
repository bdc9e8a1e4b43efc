"""Tests for ``garrison.edge.client_address``: whom to believe in X-Forwarded-For."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.edge.client_address import (
    MAX_FORWARDED_HOPS,
    PARSED_ADDRESS_CACHE,
    ForwardedHeader,
    address_text,
    client_address,
    parse_address,
)

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


@pytest.mark.parametrize(
    "entry",
    [
        "unknown",
        "_hidden",
        "203.0.113.5:99999",
        "203.0.113.5:",
        "[203.0.113.5]",
        "[2001:db8::5",
        "[2001:db8::5]443",
        "2001:db8::5:443:",
        "host.example:443",
    ],
)
def test_non_address_entries_are_garbled(entry: str) -> None:
    assert client_address(PROXY, entry, PROXIES) == PROXY


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("203.0.113.5:443", "203.0.113.5"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("[2001:db8::5]:443", "2001:db8::5"),
        ("[::ffff:203.0.113.5]:80", "203.0.113.5"),
        (" 203.0.113.5:1 ", "203.0.113.5"),
    ],
)
def test_entries_with_ports_and_brackets_are_parsed(entry: str, address: str) -> None:
    assert client_address(PROXY, entry, PROXIES) == ip(address)


def test_proxy_entry_with_a_port_is_recognised_as_trusted() -> None:
    assert client_address(PROXY, "203.0.113.5, 10.3.3.3:8443", PROXIES) == ip("203.0.113.5")


# ── several header lines are one list (RFC 9110 section 5.3) ────────────────────────────
def test_client_written_first_line_does_not_choose_the_address() -> None:
    # The client wrote the first line; the proxy appended its own line after it.
    lines = ["10.9.9.9", "203.0.113.5"]
    assert client_address(PROXY, lines, PROXIES) == ip("203.0.113.5")


def test_lines_are_walked_from_the_right_through_trusted_proxies() -> None:
    lines = ["1.2.3.4, 5.6.7.8", "203.0.113.5, 10.1.1.1", "10.2.2.2"]
    assert client_address(PROXY, lines, PROXIES) == ip("203.0.113.5")


def test_hop_limit_counts_entries_over_all_lines() -> None:
    lines = ["203.0.113.5", *(f"10.0.0.{i}" for i in range(1, MAX_FORWARDED_HOPS + 1))]
    assert client_address(PROXY, lines, PROXIES) == ip("10.0.0.1")


def test_empty_line_list_gives_the_peer() -> None:
    assert client_address(PROXY, [], PROXIES) == PROXY


def test_garbled_line_stops_the_walk() -> None:
    assert client_address(PROXY, ["203.0.113.5", "", "10.7.7.7"], PROXIES) == ip("10.7.7.7")


# ── Forwarded (RFC 7239) ─────────────────────────────────────────────────────────────────
FWD = ForwardedHeader.FORWARDED


@pytest.mark.parametrize(
    ("lines", "address"),
    [
        (["for=203.0.113.5"], "203.0.113.5"),
        (["For=203.0.113.5"], "203.0.113.5"),
        (['for="203.0.113.5:4711"'], "203.0.113.5"),
        (['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::17"),
        (['for="[2001:db8:cafe::17]"'], "2001:db8:cafe::17"),
        (["for=192.0.2.60;proto=http;by=203.0.113.43"], "192.0.2.60"),
        (["proto=https; for=192.0.2.60 ;by=10.0.0.1"], "192.0.2.60"),
        (["for=1.2.3.4, for=192.0.2.60;proto=http"], "192.0.2.60"),
        (["for=1.2.3.4", "for=192.0.2.60, for=10.5.5.5"], "192.0.2.60"),
        (['for="1.2.3.4,5.6.7.8", for=192.0.2.60'], "192.0.2.60"),
        ([r'for="\1\9\2.0.2.60"'], "192.0.2.60"),
    ],
)
def test_forwarded_for_parameters_are_read(lines: list[str], address: str) -> None:
    assert client_address(PROXY, lines, PROXIES, FWD) == ip(address)


@pytest.mark.parametrize(
    "line",
    [
        "for=unknown",
        "for=_hidden",
        "proto=http",
        "for=203.0.113.5;for=203.0.113.6",
        "for=203.0.113.5 by=x",
        'for="203.0.113.5',
        "for=[2001:db8::1]",  # brackets are not a token: must be quoted
        "for",
        "=203.0.113.5",
    ],
)
def test_garbled_forwarded_elements_give_the_last_trusted_hop(line: str) -> None:
    assert client_address(PROXY, [line, "for=10.7.7.7"], PROXIES, FWD) == ip("10.7.7.7")


def test_garbled_forwarded_line_hides_everything_left_of_it() -> None:
    lines = ["for=203.0.113.5", "for=198.51.100.1;;;junk", "for=10.7.7.7"]
    assert client_address(PROXY, lines, PROXIES, FWD) == ip("10.7.7.7")


def test_empty_forwarded_elements_are_skipped() -> None:
    assert client_address(PROXY, ["for=203.0.113.5,, ,for=10.1.1.1"], PROXIES, FWD) == ip(
        "203.0.113.5"
    )


def test_forwarded_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address(OUTSIDER, ["for=203.0.113.5"], PROXIES, FWD) == OUTSIDER


def test_x_forwarded_for_syntax_is_not_read_as_forwarded() -> None:
    assert client_address(PROXY, ["203.0.113.5"], PROXIES, FWD) == PROXY


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


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_address_text_spells_an_address_as_str_does(address: ipaddress._BaseAddress) -> None:
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert address_text(address) == str(address)
    assert address_text(address) == str(address)  # and again, from the cache


def test_address_text_spells_a_scoped_ipv6_address_with_its_scope() -> None:
    scoped = ip("fe80::1%eth0")
    assert isinstance(scoped, ipaddress.IPv6Address)
    assert address_text(scoped) == "fe80::1%eth0"
    assert address_text(ip("fe80::1")) == "fe80::1"  # equal addresses, told apart


def test_address_text_remembers_at_most_its_cache_bound() -> None:
    address_text.cache_clear()
    for n in range(PARSED_ADDRESS_CACHE + 100):
        address_text(ipaddress.IPv4Address(n))
    assert address_text.cache_info().currsize == PARSED_ADDRESS_CACHE
