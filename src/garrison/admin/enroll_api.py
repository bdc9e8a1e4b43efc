"""Admin API: ``POST /enroll``, where a person redeems their enrollment code for a key of
their own. Unauthenticated by nature (the person has no key yet): rate-limited per source,
and every refusal audited (``enrollment.refused``; a refusal of the code itself is recorded
by the redemption).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from garrison.admin import schemas
from garrison.admin.base import BACKEND_KEY, PROCESS_KEY
from garrison.admin.dispatch import RULE_REASONS, error_response, json_response, parse_body, record
from garrison.admin.identity_api import issued
from garrison.audit import AuditEvent
from garrison.audit.payloads_identity import EnrollmentRefused
from garrison.domain import Reason
from garrison.domain.provenance import Provenance
from garrison.edge.process import ProcessState
from garrison.edge.request import peer_address, presented_key, read_body
from garrison.edge.request_ids import new_request_id
from garrison.errors import AuditUnavailable, ClientError, GarrisonError, RateLimited
from garrison.identity import authenticate
from garrison.identity.enroll_limits import EnrollLimiter
from garrison.store import Directory, enrollment

# An enrollment body is a code and a few options.
ENROLL_MAX_BODY_BYTES = 8 * 1024

LIMITER_KEY = web.AppKey("garrison_enroll_limiter", EnrollLimiter)


def new_limiter() -> EnrollLimiter:
    return EnrollLimiter()


async def enroll_endpoint(request: web.Request) -> web.StreamResponse:

    state = request.app[PROCESS_KEY]
    backend = request.app[BACKEND_KEY]
    limiter = request.app[LIMITER_KEY]
    request_id = new_request_id()
    now = state.clock()
    address = str(peer_address(request, state))

    def refused(reason: Reason) -> None:
        payload = EnrollmentRefused(client_address=address, reason_codes=(reason.value,))
        record(
            state,
            AuditEvent(
                payload.NAME,
                at=state.clock(),
                actor=f"enroll:{address}",
                request_id=request_id,
                data=payload.as_data(),
                payload=payload,
            ),
        )

    if not limiter.allow(address, now):
        refused(Reason.ENROLL_RATE)
        return error_response(
            RateLimited("too many enrollment attempts; wait and retry"), request_id
        )
    try:
        raw = await read_body(request, state, ENROLL_MAX_BODY_BYTES)
        body = parse_body(schemas.Enroll, raw)
    except GarrisonError as exc:
        refused(Reason.ADMIN_INVALID)
        return error_response(exc, request_id)
    snap = state.snapshot
    auth = authenticate(
        presented_key(request),
        credentials=snap.credentials,
        principals=snap.principals,
        orgs=snap.orgs,
        pepper=state.pepper,
        now=now,
        address=peer_address(request, state),
    )
    presented_principal = auth.credential.principal_id if auth.credential is not None else None
    directory = Directory(
        backend.engine,
        actor=f"enroll:{address}",
        pepper=backend.pepper,
        sealer=backend.sealer,
        origin={"via": "enroll", "client_address": address, "request_id": request_id},
    )
    try:
        created, name = await asyncio.to_thread(
            enrollment.redeem,
            directory,
            body.code,
            now=now,
            address=address,
            presented_principal=presented_principal,
            presented_key=auth.key_id,
            networks=body.networks,
            expires_in=body.expires_in_s,
            note=body.note,
        )
    except enrollment.EnrollRefused as exc:
        await _integrated(state)
        return error_response(exc, request_id)  # audited by redeem
    except ClientError as exc:
        # A lock on the person or vendor is recorded as such (lock.active), not as junk.
        refused(RULE_REASONS.get(exc.rule or "", Reason.ADMIN_INVALID))
        return error_response(exc, request_id)
    await _integrated(state)
    await backend.reload()
    return json_response(
        201, {**issued(created, Provenance.ENROLLED), "principal": name}, request_id
    )


async def _integrated(state: ProcessState) -> None:
    """The enrollment's audit record (in the outbox) is in the tree before the answer; if
    the log is down it waits there and the answer still goes out."""
    with contextlib.suppress(AuditUnavailable):
        await state.audit.integrate()
