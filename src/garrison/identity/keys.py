"""The Garrison API key: ``gk_<id>_<secret>``.

``id`` is public (it names the key in logs, the audit record and the console); ``secret`` is
256 random bits, shown once at creation and kept only as HMAC-SHA-256 under a pepper that
lives in a key file outside the database. A stolen database therefore yields no usable key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from garrison.domain.secret import Secret

KEY_PREFIX = "gk"
# 8 bytes = 64 bits of id: unique across any realistic directory, short enough to read aloud.
KEY_ID_BYTES = 8
# 32 bytes = 256 bits of secret: beyond brute force, as the data-plane issue requires.
KEY_SECRET_BYTES = 32
# Longest Authorization value we even look at; anything longer cannot be a Garrison key.
KEY_MAX_CHARS = 128
# Peppers whose keyed hashes are kept (``_pads``): a process has one pepper (tests make a
# few); a pepper past these is keyed again, never hashed wrong.
PEPPERS_KEYED = 4
_SHA256_BLOCK = 64  # bytes: HMAC pads its key to the hash's block size

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
    inner, outer = _pads(pepper)
    inner = inner.copy()
    inner.update(f"{key_id}:{secret}".encode())
    outer = outer.copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


@functools.lru_cache(maxsize=PEPPERS_KEYED)
def _pads(pepper: bytes) -> tuple[Any, Any]:
    """HMAC-SHA-256 keyed with ``pepper`` (RFC 2104), as its two hashes already fed their
    key pads; ``hash_secret`` copies them and never updates these. Keying an HMAC on every
    call (``hmac.new``) hashed both pads again: 1.6 µs a key instead of 0.7 µs
    (docs/benchmarks.md). Holds only what the pepper gives, which this process holds
    anyway; no presented secret is kept."""
    key = hashlib.sha256(pepper).digest() if len(pepper) > _SHA256_BLOCK else pepper
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


def issue_key(pepper: bytes) -> IssuedKey:
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(KEY_SECRET_BYTES)).rstrip(b"=").decode()
    token = f"{KEY_PREFIX}_{key_id}_{secret}"
    return IssuedKey(
        key_id=key_id, token=Secret(token), secret_hash=hash_secret(pepper, key_id, secret)
    )
