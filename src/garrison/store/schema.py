"""Tables, as SQLAlchemy Core metadata. Alembic migrations in ``store/migrations`` create them.

Times are UNIX seconds (REAL) so the same columns work on SQLite and PostgreSQL; lists
(networks, compartments) are JSON text.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

# Column factories: the shapes several tables share, named once. A Column belongs to one
# table, so each call makes a new one. The DDL they compile to is held by
# tests/store/test_schema_ddl.py (the migrations create exactly these columns).


def _id() -> sa.Column[str]:
    """The row's own id (a generated string id)."""
    return sa.Column("id", sa.String(40), primary_key=True)


def _seq() -> sa.Column[int]:
    """An append-only table's own ordinal."""
    return sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True)


def _ref(name: str, foreign: str | None = None, *, nullable: bool = False) -> sa.Column[str]:
    """Another row's id; with ``foreign`` ("table.id") a foreign key to it."""
    if foreign is None:
        return sa.Column(name, sa.String(40), nullable=nullable)
    return sa.Column(name, sa.String(40), sa.ForeignKey(foreign), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[float]:
    """A moment, in UNIX seconds."""
    return sa.Column(name, sa.Float, nullable=nullable)


def _actor(name: str, *, nullable: bool = False) -> sa.Column[str]:
    """Who did it: a principal id or the local actor's name."""
    return sa.Column(name, sa.String(200), nullable=nullable)


def _word(name: str) -> sa.Column[str]:
    """A short enumerated value (a status, a kind)."""
    return sa.Column(name, sa.String(20), nullable=False)


def _reason(name: str, *, nullable: bool = False) -> sa.Column[str]:
    """A person's stated reason."""
    return sa.Column(name, sa.String(500), nullable=nullable)


def _json(name: str, *, default: str | None = None) -> sa.Column[str]:
    """JSON text (a list or an object), never NULL; ``default`` is the server default."""
    return sa.Column(name, sa.Text, nullable=False, server_default=default)


def _address(name: str) -> sa.Column[str]:
    """A client's network address, where one is known."""
    return sa.Column(name, sa.String(64), nullable=True)


def _event_columns() -> list[sa.Column[Any]]:
    """An audit event's row: its canonical ``record`` and the copies kept for querying."""
    return [
        _seq(),
        _time("at"),
        sa.Column("name", sa.String(60), nullable=False),
        _ref("request_id", nullable=True),
        _ref("principal_id", nullable=True),
        _ref("credential_id", nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("record", sa.LargeBinary, nullable=False),
    ]


def _sign_in_identity() -> list[sa.Column[str]]:
    """A person's identity at an OpenID provider; ``provider`` is "default" or a vendor's name."""
    return [
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
    ]


orgs = sa.Table(
    "orgs",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    _word("kind"),
    _time("created_at"),
    # Vendor terms (NULL / empty for the internal org).
    _ref("sponsor_id", nullable=True),
    _time("contract_start", nullable=True),
    _time("contract_end", nullable=True),
    _json("networks", default="[]"),
    sa.Column("seat_limit", sa.Integer, nullable=True),
    sa.Column("ceiling_level", sa.Integer, nullable=True),
    _json("ceiling_compartments", default="[]"),
    _time("security_review_at", nullable=True),
    sa.Column("agreement_ref", sa.String(200), nullable=False, server_default=""),
    sa.Column("status", sa.String(20), nullable=False, server_default="active"),
)

principals = sa.Table(
    "principals",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    _ref("org_id", "orgs.id"),
    _word("kind"),
    sa.Column("clearance", sa.Integer, nullable=False),
    _json("compartments"),
    _word("status"),
    _time("created_at"),
    _json("roles", default="[]"),
    # A service account's owner (a person's id); who invited a person (id or local actor).
    _ref("owner_id", nullable=True),
    _actor("invited_by", nullable=True),
)

credentials = sa.Table(
    "credentials",
    metadata,
    _id(),
    _ref("principal_id", "principals.id"),
    sa.Column("secret_hash", sa.LargeBinary(64), nullable=False),
    _time("created_at"),
    _time("expires_at", nullable=True),
    _json("networks"),
    _time("revoked_at", nullable=True),
    sa.Column("note", sa.String(200), nullable=False, server_default=""),
    sa.Column("canary", sa.Boolean, nullable=False, server_default=sa.false()),
    # How the key came to be (garrison.domain.provenance) and who made it (a principal id,
    # or the local actor for a break-glass key; NULL where nobody knows).
    sa.Column("provenance", sa.String(20), nullable=False, server_default="legacy"),
    _actor("created_by", nullable=True),
    # A service account's key bound to a client certificate: its x5t#S256 (43 characters;
    # garrison.identity.cert_binding). NULL: a plain key.
    sa.Column("cert_thumbprint", sa.String(64), nullable=True),
)

# One-time enrollment codes: only an HMAC of the code is kept; a code is used at most once.
enrollments = sa.Table(
    "enrollments",
    metadata,
    _id(),
    sa.Column("code_hash", sa.LargeBinary(32), nullable=False, unique=True),
    _ref("principal_id", "principals.id"),
    _actor("invited_by"),
    _ref("invited_with", nullable=True),  # the inviter's key id
    _address("invited_from"),  # the inviter's address
    _ref("change_id", nullable=True),  # the approval it used
    _time("created_at"),
    _time("expires_at"),
    _time("used_at", nullable=True),
    _address("used_from"),
    _ref("credential_id", nullable=True),
    _time("revoked_at", nullable=True),
)

models = sa.Table(
    "models",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("upstream_url", sa.String(2000), nullable=False),
    sa.Column("upstream_model", sa.String(200), nullable=False),
    sa.Column("api", sa.String(20), nullable=False),
    sa.Column("auth_style", sa.String(20), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    _json("compartments"),
    sa.Column("upstream_key_sealed", sa.LargeBinary, nullable=True),
    _time("created_at"),
    sa.Column("requires_justification", sa.Boolean, nullable=False, server_default=sa.false()),
    # JSON list of extra request fields an admin allowed (domain.request_fields).
    _json("extra_fields", default="[]"),
    # JSON object of the upstream's TLS files (domain.upstream_tls; NULL: the system's CAs).
    sa.Column("upstream_tls", sa.Text, nullable=True),
)

# Every directory write adds a row here in the same transaction; gateway processes watch the
# highest seq and rebuild their snapshot when it moves.
change_feed = sa.Table(
    "change_feed",
    metadata,
    _seq(),
    _time("at"),
    sa.Column("entity", sa.String(40), nullable=False),
    _ref("entity_id"),
    sa.Column("op", sa.String(20), nullable=False),
)

# The audit log. ``record`` is the canonical encoding of the event (the future Merkle leaf);
# the other columns are copies for querying.
audit_events = sa.Table(
    "audit_events",
    metadata,
    *_event_columns(),
    # H(0x00 ‖ record), kept so a modified record is located at once; verification always
    # recomputes it and never trusts this column.
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=True),
    sa.Index("ix_audit_events_request_id", "request_id"),
    sa.Index("ix_audit_events_credential_id", "credential_id", "seq"),
    sa.Index("ix_audit_events_principal_id", "principal_id", "seq"),
)

# The audit outbox: a directory change writes its event here, in the change's own
# transaction, encoded without a leaf index (``AuditEvent.unindexed``). Only the audit writer
# (``garrison.audit.sqlite_sink``) gives it a leaf index: in one transaction it moves rows
# from here, oldest first, into ``audit_events`` and the tree, then hands every record it
# committed to the exporters and detection. The columns match ``audit_events`` (bar the leaf
# index and hash) so security reads that must see a change at once read both tables.
audit_outbox = sa.Table(
    "audit_outbox",
    metadata,
    *_event_columns(),
)

# Optional full capture of request bodies, encrypted with the capture key (keys/capture.keys),
# never the data key: reading them is a separate privilege. Off by default.
audit_captures = sa.Table(
    "audit_captures",
    metadata,
    sa.Column("request_id", sa.String(40), primary_key=True),
    _time("at"),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
)

# Signed checkpoints. ``body`` is the checkpoint JSON including its signature; ``edge`` is
# the compact tree's right edge at that size, so a restart resumes without re-reading the log
# (checked against the signed root before use).
audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    _seq(),
    sa.Column("tree_size", sa.Integer, nullable=False),
    _time("at"),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("edge", sa.LargeBinary, nullable=False),
)

# Incidents: a record of one compromise, its subjects, status and notes. The timeline and the
# report are built from the audit log, never stored twice.
incidents = sa.Table(
    "incidents",
    metadata,
    _id(),
    sa.Column("title", sa.String(200), nullable=False),
    _word("status"),
    _actor("opened_by"),
    _time("opened_at"),
    _time("since"),
    _time("updated_at"),
    # {"vendor": [org ids], "principal": [ids], "credential": [ids]}
    _json("subjects", default="{}"),
)

incident_notes = sa.Table(
    "incident_notes",
    metadata,
    _seq(),
    _ref("incident_id", "incidents.id"),
    _time("at"),
    _actor("author"),
    _word("kind"),  # note, status, action
    sa.Column("text", sa.Text, nullable=False),
)

# Locks: kill switches on a credential, principal, org, model, network or everything. Kept
# after they are lifted or expire (the record of what was locked, when, by whom, and why).
locks = sa.Table(
    "locks",
    metadata,
    _id(),
    _word("kind"),
    # The target's id (credential, principal, org, model), a CIDR, or "*".
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("target_name", sa.String(200), nullable=False),
    _reason("reason"),
    _actor("created_by"),
    _time("created_at"),
    _time("expires_at", nullable=True),
    _ref("incident_id", "incidents.id", nullable=True),
    _time("lifted_at", nullable=True),
    _actor("lifted_by", nullable=True),
    _reason("lift_reason", nullable=True),
    _actor("lift_requested_by", nullable=True),
    _time("lift_requested_at", nullable=True),
    sa.Index("ix_locks_lifted_at", "lifted_at"),
)

# Organisation policy sets (Cedar text), newest version in force; each was validated against
# the schema before it was stored, and approved by a second admin.
policy_sets = sa.Table(
    "policy_sets",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    _time("created_at"),
    _actor("proposed_by"),
    _actor("approved_by", nullable=True),
)

# Just-in-time access: a principal asks for a critical model for a while; approvers decide.
access_requests = sa.Table(
    "access_requests",
    metadata,
    _id(),
    _ref("principal_id"),
    _ref("model_id"),
    _time("duration_s"),
    _reason("reason"),
    _word("status"),
    _time("created_at"),
    _time("expires_at"),  # a pending request lapses at this
    _json("approvals", default="[]"),  # approver ids
    _time("decided_at", nullable=True),
    _actor("decided_by", nullable=True),
    _reason("decision_reason", nullable=True),
)

grants = sa.Table(
    "grants",
    metadata,
    _id(),
    _ref("request_id"),
    _ref("principal_id"),
    _ref("model_id"),
    _time("starts_at"),
    _time("expires_at"),
    _time("revoked_at", nullable=True),
    _actor("revoked_by", nullable=True),
)

# Sensitive admin changes waiting for a second admin (two-person rule).
pending_changes = sa.Table(
    "pending_changes",
    metadata,
    _id(),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("summary", sa.String(500), nullable=False),
    _actor("requested_by"),
    _time("requested_at"),
    _time("expires_at"),
    _word("status"),
    _actor("decided_by", nullable=True),
    _time("decided_at", nullable=True),
)

# Alerts from the detection engine: deduplicated (a repeat grows count and evidence), with
# the evidence event indices and the playbook actions taken.
alerts = sa.Table(
    "alerts",
    metadata,
    _seq(),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("subject_kind", sa.String(20), nullable=False),
    sa.Column("subject_id", sa.String(200), nullable=False),
    sa.Column("dedup_key", sa.String(300), nullable=False),
    _word("status"),  # open, acked, resolved
    _time("first_at"),  # the first evidence event's time
    _time("last_at"),
    _time("raised_at"),  # when detection raised it
    sa.Column("count", sa.Integer, nullable=False),
    _json("evidence"),  # JSON list of leaf indices
    sa.Column("data", sa.Text, nullable=False),
    _ref("principal_id", nullable=True),
    _ref("org_id", nullable=True),
    _ref("credential_id", nullable=True),
    _ref("incident_id", nullable=True),
    _json("actions", default="[]"),
    _time("updated_at"),
    sa.Index("ix_alerts_dedup", "dedup_key", "status"),
)

# Gateway processes on this database, each with a lease it renews while alive. Calls of an
# instance whose lease lapsed without a clean stop get an explicit "process ended" outcome.
# ``id`` is the instance's request-id prefix, so its calls are found by a range on request_id.
gateway_instances = sa.Table(
    "gateway_instances",
    metadata,
    _id(),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    _time("started_at"),
    _time("lease_until"),
    _time("ended_at", nullable=True),  # a clean stop, or recovery by another
    _ref("ended_by", nullable=True),  # itself, or the recovering instance
)


# Detection runs as one worker among the gateway processes sharing the database: this row is
# its lease (``holder`` until ``lease_until``), its cursor (the last ``audit_events.seq`` it
# judged), its detectors' state (compressed JSON) and the findings whose playbooks and
# notices are still to run — the cursor, the state and the alerts of a range of events are
# committed in one transaction (``garrison.store.detector_state``).
detector_state = sa.Table(
    "detector_state",
    metadata,
    _id(),
    sa.Column("cursor", sa.Integer, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=True),
    _json("pending", default="[]"),
    sa.Column("holder", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
    _time("updated_at"),
)

# A person's sign-in identity at an OpenID provider: (issuer, subject), recorded once when
# their first sign-in redeems an invitation; never matched by email or username.
identity_links = sa.Table(
    "identity_links",
    metadata,
    _id(),
    _ref("principal_id", "principals.id"),
    *_sign_in_identity(),
    _ref("enrollment_id"),
    _time("linked_at"),
    _address("linked_from"),
    _time("unlinked_at", nullable=True),
    sa.UniqueConstraint("issuer", "subject", name="uq_identity_links_issuer_subject"),
)


# Sign-in sessions: one row per token exchange (what the access token says, never the token),
# so that one session can be named, listed and locked on its own (its id stands where a key
# id stands). Rows outlive their tokens as the record, pruned after SESSION_RECORD_KEEP_S.
sessions = sa.Table(
    "sessions",
    metadata,
    _id(),
    _ref("principal_id", "principals.id"),
    *_sign_in_identity(),
    sa.Column("jkt", sa.String(64), nullable=False),  # the client key's RFC 7638 thumbprint
    _json("amr"),  # JSON list
    sa.Column("acr", sa.String(200), nullable=True),
    _json("roles"),  # JSON list: what the session holds
    _time("issued_at"),
    _time("expires_at"),
    _address("address"),
    sa.Index("ix_sessions_principal_id", "principal_id"),
)
