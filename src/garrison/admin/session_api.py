"""The token exchange: an ID token from the organisation's provider → a Garrison access token.

    POST /auth/v1/token
    DPoP: <proof for POST {public_url}/auth/v1/token, signed by the client's new key>
    {"id_token": "...", "enrollment_code": "ge_..."}   # the code only at the first sign-in

    → 200 {"access_token": "...", "token_type": "DPoP", "expires_in": 3600, ...}

Checks, in order: the source's attempt budget; the DPoP proof (the client holds the key the
token will be bound to); the ID token (``garrison.identity.oidc_tokens``: signature by the
provider's current keys, iss, aud, azp, times, and a nonce that names the proof's key, so a
token captured on its way to one client cannot be exchanged by another); the token's single
use; the link of (iss, sub) to a person (made here by redeeming the invitation's code, never
by matching an email); that the provider may assert that person (a vendor's provider: only
that vendor's people); the person active and no lock covering them or their org. Groups
from the provider only narrow the person's roles for the session, and the token carries the
roles kept (``roles``; each call intersects them with the directory's again). The session is
recorded in the directory (``identity_links.record_session``: id, person, provider iss/sub,
key thumbprint, times, amr, roles) with its ``session.started`` event in one transaction,
durable before the token leaves, so one session can be listed and locked alone; a refusal
is a ``session.refused`` event with reason codes. The caller sees one refusal for every
invalid token.

Refresh: the CLI refreshes its IdP session (the provider's refresh token) and exchanges the
fresh ID token again; Garrison keeps no refresh tokens.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints

from garrison.admin.base import BACKEND_KEY, PROCESS_KEY
from garrison.admin.dispatch import error_response, json_response, parse_body
from garrison.audit import AuditEvent
from garrison.audit.payload_base import ABSENT, Absent
from garrison.audit.payloads_identity import SessionRefused, SessionStarted
from garrison.domain import OrgKind, Principal, PrincipalKind, Reason
from garrison.edge.admission import admit_person
from garrison.edge.request import peer_address, read_body
from garrison.edge.request_ids import new_request_id
from garrison.errors import (
    AuditUnavailable,
    ClientError,
    Forbidden,
    GarrisonError,
    RateLimited,
    ServerError,
)
from garrison.identity.access_tokens import (
    ACCESS_TOKEN_MAX_S,
    InvalidToken,
    SessionClaims,
    issue_access_token,
)
from garrison.identity.dpop import MemoryReplayCache, ReplayCache, ReplayVerdict, verify_proof
from garrison.identity.enroll_limits import EnrollLimiter, source_key
from garrison.identity.oidc_config import OidcProvider, OidcSettings
from garrison.identity.oidc_keys import ProviderKeys, ProviderUnavailable
from garrison.identity.oidc_tokens import (
    ID_TOKEN_MAX_AGE_S,
    ID_TOKEN_MAX_BYTES,
    ID_TOKEN_SKEW_S,
    IdToken,
    IdTokenRejected,
    check_header,
    has_mfa,
    unverified_header_and_issuer,
    validate_id_token,
)
from garrison.identity.token_auth import session_principal
from garrison.store import identity_links

TOKEN_PATH = "/auth/v1/token"  # noqa: S105 - a path
PROVIDERS_PATH = "/auth/v1/providers"
# ID tokens remembered (by digest) until they expire, so each is exchanged once: a few
# minutes of sign-ins at a generous rate; when full, exchanges are refused (fail closed).
ID_TOKEN_REPLAY_MAX = 50_000
# ...of which one vendor's provider holds at most this many: the vendor runs it and can mint
# valid ID tokens at will; past its share only its own sign-ins are refused.
ID_TOKEN_REPLAY_PER_VENDOR_MAX = 5_000
# Sign-in attempts per source address per ENROLL_WINDOW_S: people sign in a few times a day,
# an office behind one NAT address a few dozen times an hour. There is no budget shared by
# everyone: an ID token is checked by its signature (nothing to guess), and a shared budget
# let junk from a handful of addresses shut sign-in for the whole organisation.
SIGNIN_ATTEMPTS_PER_SOURCE = 60
# A proof's key thumbprint is 43 base64url characters; the nonce is "<jkt>.<random>".
NONCE_SEPARATOR = "."

# What a person refused by the admission step is told (a vendor's terms, for any other code).
_REFUSED_BECAUSE = {
    Reason.PRINCIPAL_INACTIVE: "sign-in refused: the person is disabled",
    Reason.LOCKED: "sign-in refused: locked",
}
_BY_TERMS = "sign-in refused by the vendor's terms"


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_token: Annotated[str, StringConstraints(min_length=1, max_length=ID_TOKEN_MAX_BYTES)]
    enrollment_code: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


@dataclass(slots=True)
class SignIn:
    """What the exchange needs beyond the process's ``TokenAuth`` (token signer, proofs' jti
    cache, public URL — shared with the token checks of every call): the providers, their
    keys, the ID-token replay cache and the attempt limiter."""

    oidc: OidcSettings
    keys: Mapping[str, ProviderKeys]  # by issuer
    seen: ReplayCache = field(
        default_factory=lambda: MemoryReplayCache(
            ID_TOKEN_REPLAY_MAX, per_owner=ID_TOKEN_REPLAY_PER_VENDOR_MAX
        )
    )
    limiter: EnrollLimiter = field(
        default_factory=lambda: EnrollLimiter(per_source=SIGNIN_ATTEMPTS_PER_SOURCE, overall=None)
    )
    token_lifetime_s: float = ACCESS_TOKEN_MAX_S


SIGNIN_KEY = web.AppKey("garrison_signin", SignIn)


class SignInRefused(Forbidden):
    """A refusal with its reason code (for the record) and the caller's message."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, public_message=message)
        self.reason = reason


def nonce_names_key(nonce: str, jkt: str) -> bool:
    """The CLI asks the provider for nonce ``<jkt>.<random>``: the ID token is then bound to
    the key of the proof that exchanges it."""
    head, sep, tail = nonce.partition(NONCE_SEPARATOR)
    return bool(sep) and bool(tail) and secrets.compare_digest(head, jkt)


def may_assert(provider: OidcProvider, vendors_with_provider: frozenset[str]) -> Any:
    """Which people ``provider`` may speak for, over (person, org) rows or snapshot objects:
    a vendor's provider only that vendor's people; the organisation's own provider everyone
    except the people of a vendor that signs in through its own provider."""

    def check(person: Any, org: Any) -> bool:
        is_vendor = str(getattr(org.kind, "value", org.kind)) == OrgKind.VENDOR.value
        if provider.vendor is not None:
            return is_vendor and org.name == provider.vendor
        return not (is_vendor and org.name in vendors_with_provider)

    return check


def session_roles(
    held: frozenset[str], provider: OidcProvider, groups: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """(kept, dropped): a role with a configured group is kept only while the provider says
    the person is in that group. Groups never add a role; a vendor's provider maps none."""
    dropped = frozenset(
        role
        for role in held
        if role in provider.role_groups and provider.role_groups[role] not in groups
    )
    return held - dropped, dropped


async def _verify_id_token(
    signin: SignIn, raw: str, jkt: str, now: float
) -> tuple[OidcProvider, IdToken]:
    header, issuer = unverified_header_and_issuer(raw)
    provider = signin.oidc.by_issuer(issuer)
    keys = signin.keys.get(issuer)
    if provider is None or keys is None:
        raise IdTokenRejected("unknown_issuer")
    kid = check_header(header, provider)
    key = await keys.key_for(kid, now=now)
    if key is None:
        raise IdTokenRejected("kid_unknown")
    token = validate_id_token(
        raw, provider=provider, key=key, now=now, nonce_ok=lambda n: nonce_names_key(n, jkt)
    )
    return provider, token


@dataclass(slots=True)
class _Exchange:
    """What the token endpoint has learnt of an exchange so far, in the order it learns it:
    a refusal records as much as it got to (``session.refused``)."""

    client_address: str
    jkt: str | Absent = ABSENT
    provider: str | Absent = ABSENT
    issuer: str | Absent = ABSENT
    person: str | Absent = ABSENT
    principal_id: str | Absent = ABSENT

    def refused(
        self, reason: Reason, *, detail: str | Absent, lock: str | Absent
    ) -> SessionRefused:
        return SessionRefused(
            client_address=self.client_address,
            jkt=self.jkt,
            provider=self.provider,
            issuer=self.issuer,
            person=self.person,
            principal_id=self.principal_id,
            detail=detail,
            lock=lock,
            reason_codes=(reason.value,),
        )


async def token_endpoint(request: web.Request) -> web.StreamResponse:
    state = request.app[PROCESS_KEY]
    backend = request.app[BACKEND_KEY]
    signin = request.app[SIGNIN_KEY]
    tokens = state.tokens
    if tokens is None:
        raise ServerError("sign-in needs this process's token keys")
    request_id = new_request_id()
    now = state.clock()
    peer = peer_address(request, state)
    address = str(peer)
    facts = _Exchange(address)

    async def refused(
        exc: GarrisonError,
        reason: Reason,
        *,
        detail: str | Absent = ABSENT,
        lock: str | Absent = ABSENT,
    ) -> web.Response:
        payload = facts.refused(reason, detail=detail, lock=lock)
        principal_id = None if facts.principal_id is ABSENT else facts.principal_id
        try:
            await state.audit.append(
                AuditEvent(
                    payload.NAME,
                    at=state.clock(),
                    actor=principal_id or f"signin:{address}",
                    request_id=request_id,
                    principal_id=principal_id,
                    data=payload.as_data(),
                    payload=payload,
                )
            )
        except AuditUnavailable:
            return error_response(AuditUnavailable(), request_id)
        return error_response(exc, request_id)

    if not signin.limiter.allow(address, now):
        return await refused(
            RateLimited("too many sign-in attempts; wait and retry"), Reason.ENROLL_RATE
        )
    if not signin.oidc.enabled:
        return await refused(
            SignInRefused(
                Reason.OIDC_NOT_CONFIGURED,
                "sign-in through an identity provider is not configured on this gateway",
            ),
            Reason.OIDC_NOT_CONFIGURED,
        )
    try:
        raw = await read_body(request, state, ID_TOKEN_MAX_BYTES + 1024)
        body = parse_body(TokenRequest, raw)
    except ClientError as exc:
        return await refused(exc, Reason.ADMIN_INVALID)
    try:
        jkt = verify_proof(
            request.headers.get("DPoP"),
            method="POST",
            # The configured public URL, never the Host header.
            url=tokens.url_for(TOKEN_PATH),
            now=now,
            access_token=None,
            replay=tokens.replay,
            owner=f"signin:{source_key(address)}",  # one source's share of the cache
        )
    except InvalidToken as exc:
        return await refused(exc, exc.reason)
    facts.jkt = jkt
    try:
        provider, token = await _verify_id_token(signin, body.id_token, jkt, now)
    except IdTokenRejected as exc:
        return await refused(exc, Reason.OIDC_TOKEN_INVALID, detail=exc.reason)
    except ProviderUnavailable as exc:
        return await refused(exc, Reason.OIDC_PROVIDER_DOWN)
    facts.provider, facts.issuer, facts.person = provider.name, token.issuer, token.person
    verdict = signin.seen.first_use(
        token.digest,
        # Until the token can no longer be accepted: its exp, or its age limit if sooner (a
        # provider's exp ten years out must not hold a place for ten years).
        expires_at=min(token.expires_at, token.issued_at + ID_TOKEN_MAX_AGE_S)
        + ID_TOKEN_SKEW_S
        + 1,
        now=now,
        owner=provider.issuer if provider.vendor is not None else None,
    )
    if verdict is not ReplayVerdict.NEW:
        return await refused(
            IdTokenRejected("replayed"), Reason.OIDC_TOKEN_REPLAYED, detail=verdict.value
        )
    vendors = frozenset(p.vendor for p in signin.oidc.providers if p.vendor is not None)
    check = may_assert(provider, vendors)
    link = await asyncio.to_thread(
        identity_links.find_link, backend.engine, token.issuer, token.subject
    )
    if link is None or body.enrollment_code is not None:
        if body.enrollment_code is None:
            return await refused(identity_links.NotLinked(), Reason.OIDC_NOT_LINKED)
        from garrison.store import Directory
        from garrison.store.enrollment import EnrollRefused

        directory = Directory(
            backend.engine,
            actor=f"signin:{address}",
            pepper=backend.pepper,
            sealer=backend.sealer,
            origin={"via": "signin", "client_address": address, "request_id": request_id},
        )
        try:
            link = await asyncio.to_thread(
                identity_links.redeem_for_link,
                directory,
                body.enrollment_code,
                issuer=token.issuer,
                subject=token.subject,
                provider=provider.name,
                may_assert=check,
                now=now,
                address=address,
            )
        except EnrollRefused as exc:
            return error_response(exc, request_id)  # recorded by the redemption
        except ClientError as exc:  # a lock on the person, their org or the inviter
            return await refused(exc, Reason.LOCKED)
        await backend.reload()
    facts.principal_id = link.principal_id
    snap = state.snapshot
    person = snap.principals.get(link.principal_id)
    org = snap.orgs.get(person.org_id) if person is not None else None
    generic = SignInRefused(Reason.OIDC_NOT_LINKED, identity_links.NOT_LINKED)
    if person is None or org is None or person.kind is not PrincipalKind.HUMAN:
        return await refused(generic, Reason.OIDC_NOT_LINKED)
    if not check(person, org):
        return await refused(generic, Reason.OIDC_VENDOR_BOUND)
    refusal = admit_person(snap, person, now, peer)
    if refusal is not None:
        return await refused(
            SignInRefused(refusal.reason, _REFUSED_BECAUSE.get(refusal.reason, _BY_TERMS)),
            refusal.reason,
            lock=refusal.lock.id if refusal.lock is not None else ABSENT,
        )
    kept, dropped = session_roles(person.roles, provider, token.groups)
    amr = token.amr
    if has_mfa(token, provider) and "mfa" not in amr:
        amr = (*amr, "mfa")  # the provider's MFA signal, recorded once in the token's own terms
    lifetime = min(float(signin.token_lifetime_s), float(ACCESS_TOKEN_MAX_S))
    claims = SessionClaims(
        principal_id=person.id,
        session_id=f"ses_{secrets.token_urlsafe(12)}",
        jkt=jkt,
        amr=amr,
        acr=token.acr,
        auth_time=token.auth_time,
        idp_issuer=token.issuer,
        idp_subject=token.subject,
        issued_at=now,
        expires_at=now + lifetime,
        roles=tuple(sorted(kept)),
    )
    try:
        access_token = issue_access_token(tokens.signer, claims)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    # The session is recorded with its ``session.started`` event in one directory write
    # (durable before the token leaves): it can then be listed and locked on its own.
    await asyncio.to_thread(
        identity_links.record_session,
        backend.engine,
        identity_links.SessionRecord(
            id=claims.session_id,
            principal_id=person.id,
            issuer=token.issuer,
            subject=token.subject,
            provider=provider.name,
            jkt=jkt,
            amr=amr,
            acr=token.acr,
            roles=claims.roles,
            issued_at=now,
            expires_at=claims.expires_at,
            address=address,
        ),
        request_id=request_id,
        started=SessionStarted(
            client_address=address,
            jkt=jkt,
            provider=provider.name,
            issuer=token.issuer,
            person=token.person,
            principal_id=link.principal_id,
            session_id=claims.session_id,
            amr=list(amr),
            acr=token.acr,
            auth_time=token.auth_time,
            expires_at=claims.expires_at,
            roles=sorted(kept),
            roles_dropped=sorted(dropped),
        ),
    )
    return json_response(
        200,
        {
            "access_token": access_token,
            "token_type": "DPoP",
            "expires_in": int(lifetime),
            "session_id": claims.session_id,
            "principal": person.name,
            "roles": sorted(kept),
            "roles_dropped": sorted(dropped),
            "mfa": claims.mfa,
        },
        request_id,
    )


async def providers_endpoint(request: web.Request) -> web.StreamResponse:
    """What ``garrison login`` needs to start a sign-in: public facts only (no secret; the
    name of the environment variable a client secret is read from, where one is needed;
    the data plane's URL)."""
    signin = request.app[SIGNIN_KEY]
    tokens = request.app[PROCESS_KEY].tokens
    return json_response(
        200,
        {
            "token_endpoint": tokens.url_for(TOKEN_PATH) if tokens is not None else None,
            # Where the session calls models: with the admin API on its own listener
            # ([admin] listen), not where the CLI signed in (the CLI keeps both).
            "gateway_url": request.app[PROCESS_KEY].data_url,
            "providers": [
                {
                    "name": p.name,
                    "issuer": p.issuer,
                    "client_id": p.client_id,
                    "scopes": list(p.scopes),
                    "client_secret_env": p.client_secret_env,
                    "vendor": p.vendor,
                }
                for p in signin.oidc.providers
            ],
        },
        new_request_id(),
    )


def session_admin(admin: Principal, session: SessionClaims) -> Principal:
    """``admin`` as this session may act: the token's roles (the provider's groups narrowed
    them at sign-in) intersected with the directory's now (``token_auth.session_principal``)."""
    return session_principal(admin, session)


def build_signin(oidc: OidcSettings) -> SignIn:
    """The exchange's state for ``oidc``'s providers (their keys fetched on first use)."""
    from garrison.identity.oidc_keys import httpx_fetch

    return SignIn(oidc=oidc, keys={p.issuer: ProviderKeys(p, httpx_fetch) for p in oidc.providers})


def add_session_routes(app: web.Application, signin: SignIn) -> None:
    app[SIGNIN_KEY] = signin
    app.router.add_post(TOKEN_PATH, token_endpoint)
    app.router.add_get(PROVIDERS_PATH, providers_endpoint)
