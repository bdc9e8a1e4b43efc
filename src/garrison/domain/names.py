"""The shapes the directory accepts: names, compartments, networks and upstream URLs.

Pure: each check returns the cleaned value or raises ``BadRequest`` naming the rule; the
directory calls them before its write transaction opens, so a bad input writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from garrison.domain.networks import parse_network
from garrison.domain.types import Network
from garrison.errors import BadRequest

# Longest name of anything in the directory: long enough for any real naming scheme, short
# enough to keep tables, logs and the console readable.
NAME_MAX_CHARS = 200
# Networks per key: a handful of egress ranges is normal; hundreds means a misuse.
KEY_MAX_NETWORKS = 64
COMPARTMENTS_MAX = 64
URL_MAX_CHARS = 2000

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]*$")
# The shape of the ids the directory makes (``store.rows.new_id``): a name of that shape
# could stand for another object wherever "name or id" is accepted.
_ID_RE = re.compile(r"^[a-z]{3}_[0-9a-f]{16}$")
_COMPARTMENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_name(name: str, what: str = "name") -> str:
    name = name.strip()
    if not name:
        raise BadRequest(f"{what} must not be empty")
    if len(name) > NAME_MAX_CHARS:
        raise BadRequest(f"{what} is longer than {NAME_MAX_CHARS} characters")
    if _ID_RE.match(name):
        raise BadRequest(f"{what} {name!r} has the shape of an id; choose another name")
    if not _NAME_RE.match(name):
        raise BadRequest(
            f"{what} {name!r} may contain only letters, digits and . _ @ : / + - "
            "and must start with a letter or digit"
        )
    return name


def check_text(text: str, what: str) -> str:
    """A free-text field (note, reason, reference) no longer than a name."""
    if len(text) > NAME_MAX_CHARS:
        raise BadRequest(f"{what} is longer than {NAME_MAX_CHARS} characters")
    return text


def check_networks(values: Iterable[str], what: str = "key") -> tuple[Network, ...]:
    nets: list[Network] = []
    for value in values:
        try:
            nets.append(parse_network(value, strict=True))
        except ValueError as exc:
            raise BadRequest(f"invalid network {value!r}: {exc}") from None
    if len(nets) > KEY_MAX_NETWORKS:
        raise BadRequest(f"at most {KEY_MAX_NETWORKS} networks per {what}")
    return tuple(nets)


def check_compartments(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        value = value.strip()
        if not _COMPARTMENT_RE.match(value):
            raise BadRequest(
                f"invalid compartment {value!r}: lower-case letters, digits, _ and -, "
                "at most 63 characters"
            )
        out.add(value)
    if len(out) > COMPARTMENTS_MAX:
        raise BadRequest(f"at most {COMPARTMENTS_MAX} compartments")
    return frozenset(out)


def check_url(url: str) -> str:
    if len(url) > URL_MAX_CHARS:
        raise BadRequest(f"upstream URL is longer than {URL_MAX_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("upstream URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise BadRequest("upstream URL must not carry credentials; use --upstream-key-env")
    if parts.query or parts.fragment:
        raise BadRequest("upstream URL must not have a query or fragment")
    return url.rstrip("/")
