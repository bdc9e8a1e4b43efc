"""Reason codes: every decision and refusal names its causes from this fixed set.

The audit log keeps the codes; callers only ever see a generic refusal.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    # authentication
    CREDENTIAL_MISSING = "credential.missing"
    CREDENTIAL_MALFORMED = "credential.malformed"
    CREDENTIAL_UNKNOWN = "credential.unknown"
    CREDENTIAL_BAD_SECRET = "credential.bad_secret"  # noqa: S105 - a reason code, not a secret
    CREDENTIAL_EXPIRED = "credential.expired"
    CREDENTIAL_REVOKED = "credential.revoked"
    CREDENTIAL_NETWORK = "credential.network_not_allowed"
    # A certificate-bound key (RFC 8705) presented without a client certificate, or with
    # one whose thumbprint is not the key's: a copied key.
    CREDENTIAL_CERT_MISSING = "credential.cert_missing"
    CREDENTIAL_CERT_MISMATCH = "credential.cert_mismatch"
    PRINCIPAL_INACTIVE = "principal.inactive"
    VENDOR_INACTIVE = "vendor.inactive"
    VENDOR_CONTRACT = "vendor.outside_contract"
    VENDOR_NETWORK = "vendor.network_not_allowed"
    # authorisation
    MODEL_UNKNOWN = "model.unknown"
    MODEL_WRONG_API = "model.wrong_api"  # a model the caller may use, on the other API
    CLEARANCE_LEVEL = "clearance.level"
    CLEARANCE_COMPARTMENT = "clearance.compartment"
    VENDOR_CEILING = "vendor.ceiling"
    GRANT_REQUIRED = "grant.required"
    MFA_REQUIRED = "mfa.required"
    JUSTIFICATION_REQUIRED = "justification.required"
    POLICY_FORBID = "policy.forbid"  # an organisation policy forbade it
    POLICY_DEFAULT_DENY = "policy.default_deny"  # no policy permitted it
    POLICY_ERROR = "policy.error"  # evaluation failed: denied, and an alert
    ALLOWED = "allowed"
    # request shape
    BODY_MALFORMED = "request.malformed"
    BODY_TOO_LARGE = "request.too_large"
    BODY_TIMEOUT = "request.read_timeout"
    # the admin API
    ADMIN_NO_ROLE = "admin.no_role"
    ADMIN_ROLE = "admin.role_lacks_action"
    ADMIN_SCOPE = "admin.out_of_scope"
    ADMIN_SELF = "admin.self_change"
    ADMIN_INVALID = "admin.invalid_request"
    # identity: who may hold which credential (issue 12)
    KEY_FOR_PERSON = "identity.key_for_person"  # an admin tried to make a person's key
    APPROVAL_CREDENTIAL = "identity.approval_credential"  # not the approver's own key
    ENROLL_REFUSED = "identity.enroll_refused"  # unknown, used or expired code
    ENROLL_BY_INVITER = "identity.enroll_by_inviter"  # the inviter presented the code
    ENROLL_RATE = "identity.enroll_rate_limited"
    NOT_OWN_CREDENTIAL = "identity.not_own_credential"  # self-service needs one's own key
    BREAK_GLASS = "identity.break_glass"
    # tokens bound to the client's key (issue 16): access token, then the DPoP proof
    TOKEN_MALFORMED = "token.malformed"  # noqa: S105 - reason codes, not secrets
    TOKEN_ALG = "token.alg_not_allowed"  # noqa: S105
    TOKEN_KID_UNKNOWN = "token.kid_unknown"  # noqa: S105
    TOKEN_BAD_SIGNATURE = "token.bad_signature"  # noqa: S105
    TOKEN_CLAIMS = "token.claims_invalid"  # noqa: S105
    TOKEN_EXPIRED = "token.expired"  # noqa: S105
    TOKEN_NOT_YET_VALID = "token.not_yet_valid"  # noqa: S105
    TOKEN_LIFETIME = "token.lifetime_over_limit"  # noqa: S105
    DPOP_MISSING = "dpop.proof_missing"
    DPOP_MALFORMED = "dpop.malformed"
    DPOP_ALG = "dpop.alg_not_allowed"
    DPOP_KEY = "dpop.key_invalid"  # no public jwk, a private one, or a key the alg cannot use
    DPOP_BAD_SIGNATURE = "dpop.bad_signature"
    DPOP_METHOD = "dpop.method_mismatch"
    DPOP_URL = "dpop.url_mismatch"
    DPOP_IAT = "dpop.iat_out_of_window"
    DPOP_REPLAY = "dpop.replayed"
    DPOP_REPLAY_FULL = "dpop.replay_cache_full"  # fail closed rather than forget a jti
    # The shared replay cache (Redis) cannot be asked: a proof that cannot be checked for
    # replay is refused (fail closed).
    DPOP_REPLAY_UNCHECKED = "dpop.replay_unchecked"
    DPOP_ATH = "dpop.ath_mismatch"
    DPOP_KEY_MISMATCH = "dpop.key_mismatch"  # the token's cnf.jkt is not the proof's key
    PERSON_BEARER_KEY = "identity.person_bearer_key"  # a person's key above the allowed level
    # sign-in through an identity provider (issue 16)
    OIDC_NOT_CONFIGURED = "oidc.not_configured"
    OIDC_TOKEN_INVALID = "oidc.id_token_invalid"  # noqa: S105 - signature, claims or nonce
    OIDC_TOKEN_REPLAYED = "oidc.id_token_replayed"  # noqa: S105 - a reason code
    OIDC_PROVIDER_DOWN = "oidc.provider_unavailable"
    OIDC_NOT_LINKED = "oidc.not_linked"  # no person is linked to this (iss, sub)
    OIDC_ALREADY_LINKED = "oidc.already_linked"  # the sign-in is linked to someone else
    OIDC_VENDOR_BOUND = "oidc.vendor_bound"  # the provider may not assert this person
    STEP_UP_REQUIRED = "mfa.step_up_required"  # approvals need a fresh MFA sign-in
    # containment
    LOCKED = "lock.active"
    LOCK_VIEW_STALE = "lock.view_stale"
    REVOKED_IN_FLIGHT = "credential.revoked_in_flight"
    # process state
    OVERLOADED = "gateway.overloaded"
    SHUTTING_DOWN = "gateway.shutting_down"
    # The process that allowed the call ended (killed) before recording how it ended.
    PROCESS_ENDED = "gateway.process_ended"
    AUDIT_UNAVAILABLE = "audit.unavailable"
    # the upstream misbehaved (recorded on request.completed; the caller sees a generic error)
    UPSTREAM_REDIRECT = "upstream.redirect"  # answered 3xx; redirects are never followed
    UPSTREAM_USAGE_INVALID = "upstream.usage_invalid"  # negative or absurd usage, clamped
    # admission after authentication (gateway/admission_limits.py)
    CREDENTIAL_CONCURRENCY = "credential.concurrency"
    PRINCIPAL_CONCURRENCY = "principal.concurrency"
    BODY_BUDGET_PRINCIPAL = "principal.body_budget"
    BODY_BUDGET = "gateway.body_budget"
    PRINCIPAL_RATE = "principal.rate"  # calls per minute over all replicas (or this process)
    # The shared limits (Redis) cannot be asked: calls to restricted and critical models are
    # refused; lower levels fall back to this process's own limits.
    SHARED_LIMITS_UNAVAILABLE = "limits.shared_unavailable"
