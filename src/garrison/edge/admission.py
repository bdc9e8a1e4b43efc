"""The one admission step both planes take: who is calling (an API key, or a DPoP-bound
sign-in token; a key bound to a client certificate only with that certificate in the TLS
handshake: ``identity.cert_binding``), whether they stand (revoked, disabled, the vendor's
terms, the key's expiry and networks: ``garrison.domain.standing``), and whether a lock
covers them.

    authenticate (with standing) → locks

``admit`` takes a request's key or token; ``admit_person`` takes a person who has no
credential yet (the sign-in exchange, once the identity provider vouched for them) through
the same standing rules and the same lock lookup. The data plane then reads the body, picks
the model and asks the policy engine; the admin plane checks its roles. Each plane answers a
refusal in its own error shape and records it in its own event (``request.denied`` /
``admin.denied`` / ``session.refused``) with the reason code this step gives. Synchronous
(no await): a caller checked here and joined to the live calls before the next await is cut
by any later lock (see ``gateway.containment``).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from garrison.domain import Principal, Reason
from garrison.domain.locks import Lock
from garrison.domain.snapshot import Snapshot
from garrison.domain.standing import standing_refusal
from garrison.edge.process import ProcessState
from garrison.edge.request import Address, peer_certificate, presented_key
from garrison.identity import authenticate
from garrison.identity.access_tokens import SessionClaims
from garrison.identity.authenticate import AuthResult
from garrison.identity.dpop import VerifiedProof
from garrison.identity.token_auth import DPOP_HEADER, authenticate_token, dpop_token


@dataclass(frozen=True, slots=True)
class Caller:
    """The answer of admission. Admitted exactly when ``refusal`` is None."""

    auth: AuthResult
    address: Address
    # The sign-in token's claims when the call came with one (then ``auth.key_id`` is the
    # session id); also on a refusal after the token checked out, for attribution.
    session: SessionClaims | None = None
    # The lock covering the caller (checked only once authenticated).
    lock: Lock | None = None
    # The caller's DPoP proof whose jti the shared replay cache must still record
    # (``admit(defer_replay=True)`` with a shared cache); None otherwise.
    proof: VerifiedProof | None = None

    @property
    def principal(self) -> Principal | None:
        """Who is calling once the secret or token checked out (also when refused after
        that, so the refusal can be attributed)."""
        return self.auth.principal

    @property
    def credential_id(self) -> str | None:
        """What names the caller's credential: the key id, or the sign-in session's id
        (None until the secret or token checked out)."""
        if self.auth.credential is not None or self.session is not None:
            return self.auth.key_id
        return None

    @property
    def refusal(self) -> Reason | None:
        if self.auth.reason is not None:
            return self.auth.reason
        if self.auth.principal is None or self.credential_id is None:
            return Reason.CREDENTIAL_MISSING
        return Reason.LOCKED if self.lock is not None else None


def admit(
    request: web.Request,
    process: ProcessState,
    now: float,
    address: Address,
    *,
    include_global: bool,
    defer_replay: bool = False,
) -> Caller:
    """Authenticate the caller of ``request`` against the snapshot in force, then look for a
    lock on their key or session, person, vendor or network. ``include_global``: a global
    lockdown covers them too (the data plane); the admin plane leaves it out, so admins can
    lift it. ``defer_replay``: a proof is checked against this process's replay cache only,
    and ``Caller.proof`` names the entry the caller records in the shared one (the data
    plane, whose admission round trip to Redis carries it)."""
    snap = process.snapshot
    token = dpop_token(request.headers.get("authorization"))
    session: SessionClaims | None = None
    proof: VerifiedProof | None = None
    if token is not None:
        bound = authenticate_token(
            token,
            request.headers.getall(DPOP_HEADER, []),
            method=request.method,
            path=request.rel_url.raw_path,
            tokens=process.tokens,
            principals=snap.principals,
            orgs=snap.orgs,
            now=now,
            address=address,
            defer_replay=defer_replay,
        )
        auth, session, proof = bound.auth, bound.session, bound.proof
    else:
        auth = authenticate(
            presented_key(request),
            credentials=snap.credentials,
            principals=snap.principals,
            orgs=snap.orgs,
            pepper=process.pepper,
            now=now,
            address=address,
            peer_cert=lambda: peer_certificate(request),
        )
    caller = Caller(auth, address, session, proof=proof)
    principal = auth.principal
    if not auth.ok or principal is None or caller.credential_id is None:
        return caller
    lock = _lock_on(snap, now, caller.credential_id, principal, address, include_global)
    return caller if lock is None else Caller(auth, address, session, lock, proof)


@dataclass(frozen=True, slots=True)
class PersonRefusal:
    """Why a person may not start a session: a reason code, and the lock when one covers them."""

    reason: Reason
    lock: Lock | None = None


def admit_person(
    snap: Snapshot, person: Principal, now: float, address: Address
) -> PersonRefusal | None:
    """The admission step for a person with no credential yet (the sign-in exchange):
    their standing (active, their vendor's terms and networks), then a lock on them, their
    org or the network. A global lockdown is left out, as on the admin plane (an admin
    signs in to lift it)."""
    org = snap.orgs.get(person.org_id)
    reason = standing_refusal(credential=None, principal=person, org=org, now=now, address=address)
    if reason is not None:
        return PersonRefusal(reason)
    lock = _lock_on(snap, now, None, person, address, include_global=False)
    return None if lock is None else PersonRefusal(Reason.LOCKED, lock)


def _lock_on(
    snap: Snapshot,
    now: float,
    credential_id: str | None,
    principal: Principal,
    address: Address,
    include_global: bool,
) -> Lock | None:
    """The lock covering this caller's key or session, person, vendor or network."""
    return snap.locks.covering(
        now,
        credential_id=credential_id,
        principal_id=principal.id,
        org_id=principal.org_id,
        address=address,
        include_global=include_global,
    )
