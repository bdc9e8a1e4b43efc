"""A key used where it must never be: a canary key at all, or a certificate-bound key without
its certificate.
"""

from __future__ import annotations

from typing import Any

from garrison.detect import rules as r
from garrison.detect.base import DENIALS, STATE_SUBJECTS_MAX, Base, Facts, newest
from garrison.detect.observation import Finding, Obs


class Canary(Base):
    """Any use of a canary key — authenticated or not — is an attack."""

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        key = obs.key
        if key is None or not obs.name.startswith(("request.", "admin.")):
            return []
        credential = facts.credentials.get(key)
        if credential is None or not credential.canary:
            return []
        return [self.finding(obs, "credential", key, "credential.canary", address=obs.address)]


# A bound key presented without its certificate (or with another one): the key left the
# machine that holds the certificate, exactly the leaked-credential signal.
_CERT_REASONS = frozenset({"credential.cert_missing", "credential.cert_mismatch"})


class CertBinding(Base):
    """The first refusal of a certificate-bound key for a missing or wrong client
    certificate (``credential.cert_missing`` / ``credential.cert_mismatch``) per key within
    ``window``: one alert per leak, not one per retry."""

    def __init__(self, rule: r.Rule) -> None:
        super().__init__(rule)
        self.p: r.CertBinding = rule.params
        self.fired: dict[str, float] = {}  # key → when it last raised a finding

    def observe(self, obs: Obs, facts: Facts) -> list[Finding]:
        if obs.name not in DENIALS or not _CERT_REASONS.intersection(obs.reasons):
            return []
        key = obs.key
        if key is None:
            return []
        horizon = obs.at - self.p.window
        last = self.fired.get(key)
        if last is not None and last >= horizon:
            return []
        self.fired[key] = obs.at
        if len(self.fired) > 2 * STATE_SUBJECTS_MAX:
            self._forget(horizon)
        hit = sorted(_CERT_REASONS.intersection(obs.reasons))
        return [
            self.finding(
                obs,
                "credential",
                key,
                "detect.cert_binding_violation",
                reasons=hit,
                address=obs.address,
            )
        ]

    def _forget(self, horizon: float) -> None:
        """Keys whose window has passed fire again anyway: drop them, then (a spray of bound
        keys inside one window) all but the most recent, as ``state()`` keeps. Amortised:
        runs once the keys have doubled past the bound."""
        live = {key: at for key, at in self.fired.items() if at >= horizon}
        self.fired = dict(newest(live, float, STATE_SUBJECTS_MAX))

    def state(self, limit: int = STATE_SUBJECTS_MAX) -> dict[str, Any]:
        return dict(newest(self.fired, float, limit))

    def restore(self, state: dict[str, Any]) -> None:
        self.fired = {str(key): float(at) for key, at in state.items()}
