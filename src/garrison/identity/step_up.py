"""Step-up: approvals, two-person changes and lock lifts need a *fresh* MFA sign-in.

A person who approves with a sign-in session (an access token from the identity provider)
must have authenticated with more than one factor (the provider's ``amr``/``acr``) within
``MFA_FRESH_S``; otherwise the call is refused with ``step_up_required``, and the CLI sends
the person through the provider again (``garrison login --max-age``). Pure: claims and clock in.

Break-glass keys are exempt (they exist for when the provider is gone) and cannot approve
anything anyway (``garrison.domain.provenance``). Without OIDC configured, people approve
with enrolled keys and approvals carry no MFA (docs/identity.md says so plainly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from garrison.domain import Reason
from garrison.errors import Forbidden

if TYPE_CHECKING:
    from garrison.identity.access_tokens import SessionClaims

# How recent the MFA sign-in behind an approval must be: ten minutes (the default
# for max_age) covers reading a request and deciding, not a sign-in from this morning.
MFA_FRESH_S = 600

STEP_UP_MESSAGE = (
    "this needs a fresh sign-in with MFA (within the last {minutes} minutes): run "
    "`garrison login --max-age {seconds}` and retry"
)


class StepUpRequired(Forbidden):
    """Refused until the person signs in again with MFA. ``code`` tells the CLI to do so."""

    code = "step_up_required"
    default_message = STEP_UP_MESSAGE.format(minutes=MFA_FRESH_S // 60, seconds=MFA_FRESH_S)

    def __init__(self, why: str) -> None:
        # The admin API shows the detail: why, then what to do.
        super().__init__(f"{why}; {self.default_message}", public_message=self.default_message)
        self.reason = Reason.STEP_UP_REQUIRED


def step_up_needed(claims: SessionClaims | None, *, now: float) -> str | None:
    """Why ``claims`` cannot approve now (None: they can, or the caller used a key)."""
    if claims is None:
        return None
    if not claims.mfa:
        return "the sign-in used a single factor"
    if now - claims.auth_time > MFA_FRESH_S:
        return f"the MFA sign-in is {int(now - claims.auth_time)} s old"
    return None


def require_fresh_mfa(claims: SessionClaims | None, *, now: float) -> None:
    why = step_up_needed(claims, now=now)
    if why is not None:
        raise StepUpRequired(why)
