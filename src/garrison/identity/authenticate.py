"""Authenticate a presented key against a directory snapshot. Pure: clock and address in.

An unknown id and a wrong secret take the same work and give the same answer to the caller;
only the reason code (kept for the audit log) tells them apart.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from garrison.domain import Credential, Org, Principal, Reason
from garrison.domain.standing import standing_refusal
from garrison.identity.cert_binding import binding_refusal
from garrison.identity.keys import hash_secret, parse_key

# Compared against when the key id is unknown, so that path costs the same HMAC as a real one.
_DUMMY_HASH = bytes(32)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Authenticated exactly when ``reason`` is ``None``.

    ``key_id`` is the presented public id when one could be parsed, and ``credential`` /
    ``principal`` are filled once the secret matched, so refusals can still be attributed in
    the audit log (never the secret).
    """

    reason: Reason | None
    key_id: str | None = None
    credential: Credential | None = None
    principal: Principal | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def authenticate(
    token: str | None,
    *,
    credentials: Mapping[str, Credential],
    principals: Mapping[str, Principal],
    orgs: Mapping[str, Org] | None = None,
    pepper: bytes,
    now: float,
    address: Address,
    peer_cert: Callable[[], bytes | None] = lambda: None,
) -> AuthResult:
    """``peer_cert``: reads the DER client certificate of the connection, verified by the
    listener's handshake (None: none); called only for a key bound to one (``cert_binding``),
    so unbound keys pay nothing for it."""
    if not token:
        return AuthResult(Reason.CREDENTIAL_MISSING)
    parsed = parse_key(token)
    if parsed is None:
        return AuthResult(Reason.CREDENTIAL_MALFORMED)
    cred = credentials.get(parsed.key_id)
    presented = hash_secret(pepper, parsed.key_id, parsed.secret.reveal())
    if cred is None:
        hmac.compare_digest(presented, _DUMMY_HASH)
        return AuthResult(Reason.CREDENTIAL_UNKNOWN, key_id=parsed.key_id)
    if not hmac.compare_digest(presented, cred.secret_hash):
        return AuthResult(Reason.CREDENTIAL_BAD_SECRET, key_id=parsed.key_id)
    # From here on the caller holds the real secret: refusals may be attributed to the
    # credential and its owner in the audit log (the caller still gets the generic 401).
    principal = principals.get(cred.principal_id)
    org = orgs.get(principal.org_id) if orgs is not None and principal is not None else None
    # A bound key without its certificate is a copied key: refused before its standing.
    bound = cred.cert_thumbprint
    reason = (
        binding_refusal(bound, peer_cert()) if bound is not None else None
    ) or standing_refusal(credential=cred, principal=principal, org=org, now=now, address=address)
    return AuthResult(reason, key_id=cred.id, credential=cred, principal=principal)
