"""Identity: the Garrison key format, hashing under a pepper, and verification."""

from garrison.identity.authenticate import AuthResult, authenticate
from garrison.identity.keys import (
    KEY_ID_BYTES,
    KEY_PREFIX,
    KEY_SECRET_BYTES,
    IssuedKey,
    ParsedKey,
    hash_secret,
    issue_key,
    parse_key,
)

__all__ = [
    "KEY_ID_BYTES",
    "KEY_PREFIX",
    "KEY_SECRET_BYTES",
    "AuthResult",
    "IssuedKey",
    "ParsedKey",
    "authenticate",
    "hash_secret",
    "issue_key",
    "parse_key",
]
