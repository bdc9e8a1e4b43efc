"""Step-up: approvals made with a session need MFA within MFA_FRESH_S."""

from __future__ import annotations

import pytest

from garrison.identity.access_tokens import SessionClaims
from garrison.identity.step_up import MFA_FRESH_S, StepUpRequired, require_fresh_mfa

NOW = 1_800_000_000.0


def session(amr: tuple[str, ...], auth_age: float) -> SessionClaims:
    return SessionClaims(
        principal_id="prn_1",
        session_id="ses_1",
        jkt="j",
        amr=amr,
        acr=None,
        auth_time=NOW - auth_age,
        idp_issuer="https://i",
        idp_subject="s",
        issued_at=NOW - 10,
        expires_at=NOW + 3000,
    )


def test_a_fresh_mfa_sign_in_may_approve() -> None:
    require_fresh_mfa(session(("pwd", "otp", "mfa"), MFA_FRESH_S - 1), now=NOW)


def test_an_mfa_sign_in_older_than_the_limit_must_step_up() -> None:
    with pytest.raises(StepUpRequired) as caught:
        require_fresh_mfa(session(("pwd", "otp", "mfa"), MFA_FRESH_S + 1), now=NOW)
    assert caught.value.code == "step_up_required"
    assert "garrison login --max-age" in caught.value.public_message


def test_a_single_factor_sign_in_must_step_up_however_fresh() -> None:
    with pytest.raises(StepUpRequired):
        require_fresh_mfa(session(("pwd",), 0), now=NOW)


def test_a_key_is_not_a_session() -> None:
    require_fresh_mfa(None, now=NOW)  # keys: no MFA to check (docs/identity.md says so)
