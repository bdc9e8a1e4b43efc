"""Where a credential came from: who created it and how. Pure: no I/O.

    enrolled     the holder redeemed a one-time enrollment code (their first key)
    self         the holder made it with a key of their own
    service      an admin (or vendor-manager) made it, for a service account
    break-glass  ``garrison recover-admin`` on the host, with the key files
    legacy       it existed before provenance was recorded (or was written in-process)

Only a person's own credential (enrolled or self, created by that person) counts as that
person's word: approvals of access requests, of two-person changes and of lockdown lifts are
taken from nothing else.
"""

from __future__ import annotations

import enum

from garrison.domain.reasons import Reason
from garrison.domain.types import Credential, Principal, PrincipalKind


class Provenance(enum.StrEnum):
    ENROLLED = "enrolled"
    SELF = "self"
    SERVICE = "service"
    BREAK_GLASS = "break-glass"
    LEGACY = "legacy"


# The provenances of a person's own credential.
OWN = frozenset({Provenance.ENROLLED, Provenance.SELF})


def is_own(credential: Credential, principal: Principal) -> bool:
    """The credential was created by the person who holds it, and nobody else."""
    return (
        principal.kind is PrincipalKind.HUMAN
        and credential.principal_id == principal.id
        and Provenance(credential.provenance) in OWN
        and credential.created_by == principal.id
    )


def approval_refusal(
    credential: Credential | None, principal: Principal, requester: str | None
) -> Reason | None:
    """Why an approval presented with ``credential`` is not ``principal``'s own word, or None.

    ``requester`` is who asked for what is being approved: a credential they created never
    speaks for anyone else, whatever route it took."""
    if credential is None or not is_own(credential, principal):
        return Reason.APPROVAL_CREDENTIAL
    if requester is not None and requester != principal.id and credential.created_by == requester:
        return Reason.APPROVAL_CREDENTIAL
    return None
