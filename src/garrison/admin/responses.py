"""What each admin API operation answers: the JSON Schema of its success body, and the
statuses it may answer besides its route's own (202 when the change waits for a second admin).

Keyed by operation id (the handler's name). The schemas name every field the server always
sends, with its type; objects stay open (a field added later is not a breaking change). The
schemathesis test (tests/admin/test_openapi_fuzz.py) and the end-to-end tests check the
server's answers against them.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
NUM: Schema = {"type": "number"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}
OBJ: Schema = {"type": "object"}
# Times are seconds since the epoch (UTC); null where the moment has not come (or never will).
TIME: Schema = NUM
MAYBE_TIME: Schema = {"type": ["number", "null"]}
MAYBE_STR: Schema = {"type": ["string", "null"]}
STRS: Schema = {"type": "array", "items": STR}
LEVEL: Schema = {"enum": ["public", "internal", "restricted", "critical"]}


def obj(**fields: Schema) -> Schema:
    """An object that always carries ``fields`` (and may carry more)."""
    return {"type": "object", "required": sorted(fields), "properties": fields}


def arr(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def one_of(*options: Schema) -> Schema:
    return {"anyOf": list(options)}


ISSUED = obj(id=STR, key=STR, principal_id=STR, expires_at=MAYBE_TIME)
CHANGE = obj(
    id=STR,
    kind=STR,
    target=STR,
    summary=STR,
    status=STR,
    requested_by=STR,
    requested_at=TIME,
    expires_at=TIME,
)
# A two-person change, waiting for a second admin (answered with 202).
PENDING = obj(pending=CHANGE)
# A one-time enrollment code for a person (shown once).
ENROLLMENT = obj(enrollment_code=STR, principal_id=STR, expires_at=TIME)
CHANGES = obj(changes=OBJ)
PRINCIPAL = obj(
    id=STR,
    name=STR,
    org=STR,
    org_id=STR,
    kind={"enum": ["human", "service"]},
    clearance=LEVEL,
    compartments=STRS,
    roles=STRS,
    status=STR,
    created_at=TIME,
)
KEY_USE = obj(
    id=STR,
    principal_id=STR,
    state=STR,
    created_at=TIME,
    expires_at=MAYBE_TIME,
    networks=STRS,
    note=STR,
    last_used=MAYBE_TIME,
    sources=STRS,
)
MODEL = obj(
    id=STR,
    name=STR,
    upstream_url=STR,
    upstream_model=STR,
    api={"enum": ["openai", "anthropic"]},
    auth_style={"enum": ["bearer", "x-api-key", "none"]},
    level=LEVEL,
    compartments=STRS,
    upstream_key={"enum": ["sealed", "none"]},
    created_at=TIME,
)
LOCK = obj(
    id=STR,
    kind=STR,
    target=STR,
    target_name=STR,
    reason=STR,
    created_by=STR,
    created_at=TIME,
    expires_at=MAYBE_TIME,
    incident_id=MAYBE_STR,
)
ACCESS_REQUEST = obj(
    id=STR,
    principal_id=STR,
    model=STR,
    duration_s=NUM,
    reason=STR,
    status=STR,
    created_at=TIME,
    expires_at=TIME,
    approvals=arr(ANY),
)
GRANT = obj(
    id=STR,
    principal=STR,
    principal_id=STR,
    model=STR,
    request_id=MAYBE_STR,
    starts_at=TIME,
    expires_at=TIME,
    state=STR,
)
ALERT = obj(
    id=STR,
    seq=INT,
    rule_id=STR,
    title=STR,
    severity=STR,
    reason=STR,
    subject=obj(kind=STR, id=STR),
    status={"enum": ["open", "acked", "resolved"]},
    first_at=TIME,
    last_at=TIME,
    count=INT,
    evidence=arr(ANY),
    actions=arr(ANY),
    updated_at=TIME,
)
INCIDENT = obj(
    id=STR, title=STR, status=STR, opened_by=STR, opened_at=TIME, since=TIME, updated_at=TIME
)
REPORT = obj(
    incident=obj(id=STR, title=STR, status=STR, opened_at=TIME, since=TIME, subjects=OBJ),
    principals=STRS,
    models=arr(OBJ),
    refusals=arr(OBJ),
    sources=arr(OBJ),
    credentials=arr(OBJ),
    locks=arr(OBJ),
    notes=arr(OBJ),
    events=INT,
    timeline=arr(ANY),
    generated_at=TIME,
)
RENDERED = obj(format={"enum": ["md", "html"]}, content=STR)
STATUS = obj(id=STR, status=STR)

# operation id → the success body's schema.
BODIES: dict[str, Schema] = {
    "whoami": obj(
        id=STR,
        name=STR,
        org_id=STR,
        roles=STRS,
        credential_id=STR,
        address=STR,
        vendor_scope=STRS,
    ),
    "list_orgs": arr(obj(id=STR, name=STR)),
    "create_org": obj(id=STR, name=STR),
    "list_vendors": arr(
        obj(
            id=STR,
            name=STR,
            status=STR,
            contract_end=MAYBE_TIME,
            days_left=INT,
            seat_limit={"type": ["integer", "null"]},
            ceiling=LEVEL,
        )
    ),
    "create_vendor": obj(id=STR, name=STR, status={"const": "onboarding"}),
    "show_vendor": obj(
        id=STR,
        name=STR,
        terms=OBJ,
        contract_days_left=INT,
        seats_used=INT,
        dormant_days=INT,
        principals=arr(OBJ),
        dormant=arr(ANY),
    ),
    "update_vendor": CHANGES,
    "set_vendor_status": obj(vendor=STR, status={"enum": ["active", "suspended", "offboarded"]}),
    "list_principals": arr(PRINCIPAL),
    "create_principal": obj(id=STR, name=STR),
    "show_principal": OBJ,
    "update_principal": CHANGES,
    "list_keys": arr(
        obj(
            id=STR,
            principal=STR,
            principal_id=STR,
            state=STR,
            created_at=TIME,
            expires_at=MAYBE_TIME,
            networks=STRS,
            note=STR,
        )
    ),
    "create_key": ISSUED,
    "revoke_key": obj(id=STR, state={"const": "revoked"}),
    # A service account's (or your own) key: its successor; a person's: an enrollment code.
    "rotate_key": one_of(
        {
            **ISSUED,
            "required": sorted([*ISSUED["required"], "rotated_from", "grace_s"]),
            "properties": {**ISSUED["properties"], "rotated_from": STR, "grace_s": NUM},
        },
        {
            **ENROLLMENT,
            "required": sorted([*ENROLLMENT["required"], "rotated_from"]),
            "properties": {**ENROLLMENT["properties"], "rotated_from": STR},
        },
    ),
    "list_models": arr(MODEL),
    "create_model": obj(id=STR, name=STR),
    "show_model": MODEL,
    "update_model": CHANGES,
    # Service accounts get a key; people get an enrollment code (their key is theirs to make).
    "rotate_vendor_keys": obj(vendor=STR, issued=arr(one_of(ISSUED, ENROLLMENT))),
    "create_own_key": ISSUED,
    "keys_audit": arr({"type": "object"}),
    "invite": ENROLLMENT,
    "list_locks": arr(
        {
            **LOCK,
            "required": sorted([*LOCK["required"], "state", "created_by_name"]),
            "properties": {**LOCK["properties"], "state": STR, "created_by_name": MAYBE_STR},
        }
    ),
    "create_lock": LOCK,
    # A sign-in session: what its token says, never the token (sessions_api).
    "list_sessions": arr(
        obj(
            id=STR,
            principal_id=STR,
            issuer=STR,
            subject=STR,
            provider=STR,
            jkt=STR,
            amr=STRS,
            acr=MAYBE_STR,
            roles=STRS,
            issued_at=TIME,
            expires_at=TIME,
            address=MAYBE_STR,
            live=BOOL,
        )
    ),
    "lift_lock": obj(id=STR, status={"enum": ["pending", "lifted"]}),
    "list_incidents": arr(
        {
            **INCIDENT,
            "required": sorted([*INCIDENT["required"], "opened_by_name"]),
            "properties": {**INCIDENT["properties"], "opened_by_name": MAYBE_STR},
        }
    ),
    "open_incident": obj(id=STR, status={"const": "open"}),
    "update_incident": OBJ,
    "incident_report": one_of(REPORT, RENDERED),
    "incident_evidence": obj(
        v=INT,
        type={"const": "evidence"},
        incident=OBJ,
        checkpoint=OBJ,
        public_keys=OBJ,
        events=arr(OBJ),
        not_yet_checkpointed=ANY,
        verify=ANY,
    ),
    # access and two-person changes
    "request_access": ACCESS_REQUEST,
    "list_requests": arr(ACCESS_REQUEST),
    "approve_request": STATUS,
    "deny_request": STATUS,
    "cancel_request": STATUS,
    "list_grants": arr(GRANT),
    "revoke_grant": STATUS,
    "approvals": obj(access_requests=arr(OBJ), changes=arr(CHANGE)),
    "list_changes": arr(CHANGE),
    "approve_change": obj(id=STR, status={"const": "approved"}, result=ANY),
    "deny_change": obj(id=STR, status={"const": "denied"}),
    "show_policy": obj(version=INT, text=STR, sha256=STR, in_force_version=ANY),
    "propose_policy": PENDING,
    "explain": obj(
        principal=STR,
        model=STR,
        decision={"enum": ["allow", "deny"]},
        reasons=STRS,
        policies=STRS,
        errors=arr(ANY),
        context=OBJ,
        credential=MAYBE_STR,
        policy_version=ANY,
    ),
    # alerts
    "list_alerts": arr(ALERT),
    "show_alert": ALERT,
    "acked_alert": obj(id=STR, updated_at=TIME),
    "resolved_alert": obj(id=STR, updated_at=TIME),
}

# Operations that may answer 202 with a pending two-person change instead of applying it.
PROPOSES: frozenset[str] = frozenset(
    {
        "create_principal",
        "update_principal",
        "update_model",
        "propose_policy",
        "create_model",
        "create_key",
        "invite",
        "set_vendor_status",
    }
)


def body_of(operation_id: str) -> Schema:
    """The success body's schema (an unconstrained one for an operation not listed yet)."""
    return BODIES.get(operation_id, ANY)
