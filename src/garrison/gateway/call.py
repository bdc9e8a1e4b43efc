"""One model call as the data plane records it: who, from where, which model, and how
it was refused (``request.denied`` with reason codes; the caller sees its API's generic
error).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from garrison.audit import AuditEvent
from garrison.audit.payloads import CallFields, Payload, RequestAllowed, RequestDenied
from garrison.domain import Reason, UpstreamApi
from garrison.errors import (
    AuditRecordInvalid,
    AuditUnavailable,
    GarrisonError,
)
from garrison.gateway.admission_limits import Ticket
from garrison.gateway.containment import Cut
from garrison.gateway.state import GatewayState
from garrison.identity.access_tokens import SessionClaims
from garrison.identity.dpop import VerifiedProof
from garrison.shared.verdicts import SharedLease

if TYPE_CHECKING:
    pass
from garrison.gateway.edge import error_response

log = logging.getLogger("garrison.gateway")


class Call:
    """Everything known about one call, for its audit events."""

    __slots__ = (
        "address",
        "allowed",
        "body_bytes",
        "body_sha256",
        "credential_id",
        "cut",
        "endpoint",
        "forwarded",
        "justified",
        "lease",
        "model",
        "model_id",
        "org_id",
        "peer",
        "presented_key_id",
        "principal_id",
        "proof",
        "recorded",
        "request_id",
        "session",
        "shared_down",
        "started",
        "task",
        "ticket",
    )

    def __init__(self, endpoint: str, request_id: str, address: str) -> None:
        self.endpoint = endpoint
        self.request_id = request_id
        self.address = address
        self.started = time.perf_counter()
        self.forwarded: float | None = None  # when the upstream request was sent
        self.principal_id: str | None = None
        self.credential_id: str | None = None
        # The sign-in token's claims when the call came with one (credential_id is then its
        # session id, which locks and limits treat as a key id).
        self.session: SessionClaims | None = None
        self.org_id: str | None = None
        self.model: str | None = None
        self.body_sha256: str | None = None
        self.body_bytes: int | None = None
        # The public id of a key that did not authenticate (unknown id, wrong secret): not a
        # secret, and what a detector needs to see someone guessing at one key.
        self.presented_key_id: str | None = None
        self.model_id: str | None = None
        self.peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        # Set when a lock (or a revocation) cuts this call in flight; its task is cancelled.
        self.cut: Cut | None = None
        self.task: asyncio.Task[Any] | None = None
        # The request.allowed event was handed to the log (what a cut then records).
        self.allowed = False
        # The per-credential/principal slots and body bytes this call holds (admission_limits).
        self.ticket: Ticket | None = None
        # The call came with a justification (a re-decision in flight keeps it).
        self.justified = False
        # Its slots in the shared limits (given back with the ticket), the DPoP replay
        # entry its shared admission records, and whether Redis could not be asked (then
        # restricted and critical models are refused: gateway.shared_admission).
        self.lease: SharedLease | None = None
        self.proof: VerifiedProof | None = None
        self.shared_down = False
        # What its request.allowed named about it (its request.completed names the same).
        self.recorded: CallFields | None = None

    def fields(self) -> CallFields:
        """The call's part of its data-plane events: the one its ``request.allowed`` named
        (nothing in it changes once the call is allowed), or as it stands now."""
        recorded = self.recorded
        if recorded is not None:
            return recorded
        return CallFields(
            self.endpoint,
            self.address,
            self.org_id,
            self.presented_key_id,
            self.body_sha256,
            self.body_bytes,
        )

    def event(self, payload: Payload, at: float) -> AuditEvent:
        """This call's audit event carrying ``payload`` (its fields in order: name, at,
        actor, request_id, principal_id, credential_id, model, data; positional, as this
        is built twice per call)."""
        principal_id = self.principal_id
        return AuditEvent(
            payload.NAME,
            at,
            principal_id,
            self.request_id,
            principal_id,
            self.credential_id,
            self.model,
            payload.as_data(),
            payload=payload,
        )

    def allowed_event(
        self,
        at: float,
        *,
        reasons: tuple[str, ...],
        policies: tuple[str, ...],
        stream: bool,
        upstream_model: str,
        level: str,
        justification: str | None = None,
        traceparent: str | None = None,
        dropped_fields: tuple[str, ...] = (),
        dropped_fields_count: int = 0,
        content_flags: tuple[str, ...] = (),
    ) -> AuditEvent:
        self.recorded = fields = self.fields()
        return self.event(
            RequestAllowed(
                call=fields,
                reasons=reasons,
                policies=policies,
                stream=stream,
                upstream_model=upstream_model,
                level=level,
                justification=justification,
                traceparent=traceparent,
                dropped_fields=dropped_fields,
                dropped_fields_count=dropped_fields_count,
                content_flags=content_flags,
            ),
            at,
        )

    def denied_event(
        self,
        at: float,
        *,
        status: int,
        reasons: tuple[str, ...],
        policies: tuple[str, ...] = (),
        by_lock: bool = False,
        lock_id: str | None = None,
    ) -> AuditEvent:
        return self.event(
            RequestDenied(
                call=self.fields(),
                status=status,
                reasons=reasons,
                policies=policies,
                by_lock=by_lock,
                lock_id=lock_id,
            ),
            at,
        )


def record_later(state: GatewayState, event: AuditEvent) -> None:
    try:
        state.audit.append_later(event)
    except (AuditUnavailable, AuditRecordInvalid) as exc:
        log.error("audit refused %s for %s: %s", event.name, event.request_id, exc.detail)


def deny(
    state: GatewayState,
    call: Call,
    api: UpstreamApi,
    exc: GarrisonError,
    reasons: tuple[Reason, ...],
    *,
    policies: tuple[str, ...] = (),
) -> web.Response:
    for reason in reasons:
        state.refusals[reason.value] += 1
    record_later(
        state,
        call.denied_event(
            state.clock(),
            status=exc.status,
            reasons=tuple([r.value for r in reasons]),
            policies=policies,
        ),
    )
    return error_response(api, exc, call.request_id)
