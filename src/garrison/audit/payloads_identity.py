"""Typed ``data`` of enrollment and sign-in: a code redeemed or refused
(``garrison.store.enrollment``, ``garrison.admin.enroll_api``), an identity linked by a
first sign-in and a session started (``garrison.store.identity_links``, built by
``garrison.admin.session_api``), an exchange refused (``garrison.admin.session_api``).

Each class's fields are the keys its producer writes, in that order (``payload_base``). The
``reasons`` and ``presented_key_id`` keys are held under other field names and answered as
those facts (a tuple; ``None`` when the record leaves the key out), as the record's
dictionary answered them.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from garrison.audit.events import EventName
from garrison.audit.payload_base import ABSENT, Absent, Payload, keyed, named, required


@named(EventName.ENROLLMENT_REDEEMED)
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRedeemed(Payload):
    """``enrollment.redeemed``: a person redeemed their code for their own key (the key is
    the record's credential), from ``client_address``; who invited them."""

    enrollment_id: str
    client_address: str = required()
    invited_by: str
    provenance: str


@named(EventName.ENROLLMENT_REFUSED)
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRefused(Payload):
    """``enrollment.refused``: a redemption or sign-in link refused, from where and why;
    the key id presented with it, and the code's enrollment and inviter when the code was
    found (the enroll endpoint's own refusals, rate and body, name neither)."""

    client_address: str = required()
    reason_codes: Sequence[str] = keyed("reasons")
    key_id: str | Absent = keyed("presented_key_id", default=ABSENT)  # noqa: RUF009
    enrollment_id: str | Absent = ABSENT
    invited_by: str | Absent = ABSENT

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(self.reason_codes)

    @property
    def presented_key_id(self) -> str | None:
        return None if self.key_id is ABSENT else self.key_id


@named(EventName.IDENTITY_LINKED)
@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityLinked(Payload):
    """``identity.linked``: a first sign-in redeemed an invitation, linking the provider's
    identity (issuer) to the person invited."""

    enrollment_id: str
    issuer: str
    provider: str
    client_address: str = required()
    invited_by: str


@named(EventName.SESSION_STARTED)
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(Payload):
    """``session.started``: an ID token exchanged for an access token — the exchange's
    facts (address, proof key thumbprint, provider, issuer, the person as the token names
    them, the principal), then the session, its methods and level of authentication, when
    it ends, and the roles it carries and those the provider's groups dropped."""

    client_address: str = required()
    jkt: str
    provider: str
    issuer: str
    person: str
    principal_id: str
    session_id: str
    amr: Sequence[str]
    acr: str | None
    auth_time: float | None
    expires_at: float
    roles: Sequence[str]
    roles_dropped: Sequence[str]


@named(EventName.SESSION_REFUSED)
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRefused(Payload):
    """``session.refused``: an exchange refused, with the facts known when it was (those
    of ``session.started``, as far as the exchange got), the detail of a token refused or
    replayed or the lock that refused the person, and the reason code."""

    client_address: str = required()
    jkt: str | Absent = ABSENT
    provider: str | Absent = ABSENT
    issuer: str | Absent = ABSENT
    person: str | Absent = ABSENT
    principal_id: str | Absent = ABSENT
    detail: str | Absent = ABSENT
    lock: str | Absent = ABSENT
    reason_codes: Sequence[str] = keyed("reasons")

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(self.reason_codes)


PAYLOADS: tuple[type[Payload], ...] = (
    EnrollmentRedeemed,
    EnrollmentRefused,
    IdentityLinked,
    SessionStarted,
    SessionRefused,
)
