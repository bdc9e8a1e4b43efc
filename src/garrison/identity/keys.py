"""The Garrison API key: ``gk_<id>_<secret>``.

``id`` is public (it names the key in logs, the audit record and the console); ``secret`` is
256 random bits, shown once at creation and kept only as HMAC-SHA-256 under a pepper that
lives in a key file outside the database. A stolen database therefore yields no usable key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from garrison.domain.secret import Secret

KEY_PREFIX = "gk"
# 8 bytes = 64 bits of id: unique across any realistic directory, short enough to read aloud.
KEY_ID_BYTES = 8
# 32 bytes = 256 bits of secret: beyond brute force, as the data-plane issue requires.
KEY_SECRET_BYTES = 32
# Longest Authorization value we even look at; anything longer cannot be a Garrison key.
KEY_MAX_CHARS = 128
# Peppers whose keyed HMACs are kept (``_keyed``): a process has one pepper (tests make a
# few); a pepper past these is keyed again, never hashed wrong.
PEPPERS_KEYED = 4

_ID_CHARS = KEY_ID_BYTES * 2  # hex
_SECRET_CHARS = 43  # unpadded base64url of 32 bytes
_KEY_RE = re.compile(
    rf"^{KEY_PREFIX}_([0-9a-f]{{{_ID_CHARS}}})_([A-Za-z0-9_-]{{{_SECRET_CHARS}}})$"
)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: Secret


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly made key: ``token`` is shown once, ``secret_hash`` is what gets stored."""

    key_id: str
    token: Secret
    secret_hash: bytes


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented key into id and secret; ``None`` when it is not a Garrison key."""
    if len(token) > KEY_MAX_CHARS:
        return None
    match = _KEY_RE.fullmatch(token)
    if match is None:
        return None
    return ParsedKey(key_id=match.group(1), secret=Secret(match.group(2)))


def hash_secret(pepper: bytes, key_id: str, secret: str) -> bytes:
    """HMAC-SHA-256 of the secret under the pepper, bound to the key id."""
    mac = _keyed(pepper).copy()
    mac.update(f"{key_id}:{secret}".encode())
    return mac.digest()


@functools.lru_cache(maxsize=PEPPERS_KEYED)
def _keyed(pepper: bytes) -> hmac.HMAC:
    """The standard library's HMAC-SHA-256 keyed with ``pepper`` and fed nothing:
    ``hash_secret`` copies it (``HMAC.copy``) and never updates this one. Keying an HMAC on
    every call (``hmac.new``) hashed both key pads again: 1.6 µs a key instead of 1.1 µs
    (docs/benchmarks.md). Holds only what the pepper gives, which this process holds
    anyway; no presented secret is kept."""
    return hmac.new(pepper, digestmod=hashlib.sha256)


def issue_key(pepper: bytes) -> IssuedKey:
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(KEY_SECRET_BYTES)).rstrip(b"=").decode()
    token = f"{KEY_PREFIX}_{key_id}_{secret}"
    return IssuedKey(
        key_id=key_id, token=Secret(token), secret_hash=hash_secret(pepper, key_id, secret)
    )
