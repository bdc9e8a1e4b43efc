"""Tables, as SQLAlchemy Core metadata. Alembic migrations in ``store/migrations`` create them.

Times are UNIX seconds (REAL) so the same columns work on SQLite and PostgreSQL; lists
(networks, compartments) are JSON text.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Vendor terms (NULL / empty for the internal org).
    sa.Column("sponsor_id", sa.String(40), nullable=True),
    sa.Column("contract_start", sa.Float, nullable=True),
    sa.Column("contract_end", sa.Float, nullable=True),
    sa.Column("networks", sa.Text, nullable=False, server_default="[]"),
    sa.Column("seat_limit", sa.Integer, nullable=True),
    sa.Column("ceiling_level", sa.Integer, nullable=True),
    sa.Column("ceiling_compartments", sa.Text, nullable=False, server_default="[]"),
    sa.Column("security_review_at", sa.Float, nullable=True),
    sa.Column("agreement_ref", sa.String(200), nullable=False, server_default=""),
    sa.Column("status", sa.String(20), nullable=False, server_default="active"),
)

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("clearance", sa.Integer, nullable=False),
    sa.Column("compartments", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("roles", sa.Text, nullable=False, server_default="[]"),
    # A service account's owner (a person's id); who invited a person (id or local actor).
    sa.Column("owner_id", sa.String(40), nullable=True),
    sa.Column("invited_by", sa.String(200), nullable=True),
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("secret_hash", sa.LargeBinary(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("networks", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("note", sa.String(200), nullable=False, server_default=""),
    sa.Column("canary", sa.Boolean, nullable=False, server_default=sa.false()),
    # How the key came to be (garrison.domain.provenance) and who made it (a principal id,
    # or the local actor for a break-glass key; NULL where nobody knows).
    sa.Column("provenance", sa.String(20), nullable=False, server_default="legacy"),
    sa.Column("created_by", sa.String(200), nullable=True),
    # A service account's key bound to a client certificate: its x5t#S256 (43 characters;
    # garrison.identity.cert_binding). NULL: a plain key.
    sa.Column("cert_thumbprint", sa.String(64), nullable=True),
)

# One-time enrollment codes: only an HMAC of the code is kept; a code is used at most once.
enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("code_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("invited_by", sa.String(200), nullable=False),
    sa.Column("invited_with", sa.String(40), nullable=True),  # the inviter's key id
    sa.Column("invited_from", sa.String(64), nullable=True),  # the inviter's address
    sa.Column("change_id", sa.String(40), nullable=True),  # the approval it used
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
    sa.Column("used_from", sa.String(64), nullable=True),
    sa.Column("credential_id", sa.String(40), nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("upstream_url", sa.String(2000), nullable=False),
    sa.Column("upstream_model", sa.String(200), nullable=False),
    sa.Column("api", sa.String(20), nullable=False),
    sa.Column("auth_style", sa.String(20), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("compartments", sa.Text, nullable=False),
    sa.Column("upstream_key_sealed", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("requires_justification", sa.Boolean, nullable=False, server_default=sa.false()),
    # JSON list of extra request fields an admin allowed (domain.request_fields).
    sa.Column("extra_fields", sa.Text, nullable=False, server_default="[]"),
    # JSON object of the upstream's TLS files (domain.upstream_tls; NULL: the system's CAs).
    sa.Column("upstream_tls", sa.Text, nullable=True),
)

# Every directory write adds a row here in the same transaction; gateway processes watch the
# highest seq and rebuild their snapshot when it moves.
change_feed = sa.Table(
    "change_feed",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("entity", sa.String(40), nullable=False),
    sa.Column("entity_id", sa.String(40), nullable=False),
    sa.Column("op", sa.String(20), nullable=False),
)

# The audit log. ``record`` is the canonical encoding of the event (the future Merkle leaf);
# the other columns are copies for querying.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("name", sa.String(60), nullable=False),
    sa.Column("request_id", sa.String(40), nullable=True),
    sa.Column("principal_id", sa.String(40), nullable=True),
    sa.Column("credential_id", sa.String(40), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("record", sa.LargeBinary, nullable=False),
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
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("name", sa.String(60), nullable=False),
    sa.Column("request_id", sa.String(40), nullable=True),
    sa.Column("principal_id", sa.String(40), nullable=True),
    sa.Column("credential_id", sa.String(40), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("record", sa.LargeBinary, nullable=False),
)

# Optional full capture of request bodies, encrypted with the capture key (keys/capture.keys),
# never the data key: reading them is a separate privilege. Off by default.
audit_captures = sa.Table(
    "audit_captures",
    metadata,
    sa.Column("request_id", sa.String(40), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
)

# Signed checkpoints. ``body`` is the checkpoint JSON including its signature; ``edge`` is
# the compact tree's right edge at that size, so a restart resumes without re-reading the log
# (checked against the signed root before use).
audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tree_size", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("edge", sa.LargeBinary, nullable=False),
)

# Incidents: a record of one compromise, its subjects, status and notes. The timeline and the
# report are built from the audit log, never stored twice.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("opened_by", sa.String(200), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # {"vendor": [org ids], "principal": [ids], "credential": [ids]}
    sa.Column("subjects", sa.Text, nullable=False, server_default="{}"),
)

incident_notes = sa.Table(
    "incident_notes",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(40), sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # note, status, action
    sa.Column("text", sa.Text, nullable=False),
)

# Locks: kill switches on a credential, principal, org, model, network or everything. Kept
# after they are lifted or expire (the record of what was locked, when, by whom, and why).
locks = sa.Table(
    "locks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    # The target's id (credential, principal, org, model), a CIDR, or "*".
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("target_name", sa.String(200), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("incident_id", sa.String(40), sa.ForeignKey("incidents.id"), nullable=True),
    sa.Column("lifted_at", sa.Float, nullable=True),
    sa.Column("lifted_by", sa.String(200), nullable=True),
    sa.Column("lift_reason", sa.String(500), nullable=True),
    sa.Column("lift_requested_by", sa.String(200), nullable=True),
    sa.Column("lift_requested_at", sa.Float, nullable=True),
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
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proposed_by", sa.String(200), nullable=False),
    sa.Column("approved_by", sa.String(200), nullable=True),
)

# Just-in-time access: a principal asks for a critical model for a while; approvers decide.
access_requests = sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("principal_id", sa.String(40), nullable=False),
    sa.Column("model_id", sa.String(40), nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # a pending request lapses at this
    sa.Column("approvals", sa.Text, nullable=False, server_default="[]"),  # approver ids
    sa.Column("decided_at", sa.Float, nullable=True),
    sa.Column("decided_by", sa.String(200), nullable=True),
    sa.Column("decision_reason", sa.String(500), nullable=True),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("principal_id", sa.String(40), nullable=False),
    sa.Column("model_id", sa.String(40), nullable=False),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
)

# Sensitive admin changes waiting for a second admin (two-person rule).
pending_changes = sa.Table(
    "pending_changes",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("summary", sa.String(500), nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("decided_by", sa.String(200), nullable=True),
    sa.Column("decided_at", sa.Float, nullable=True),
)

# Alerts from the detection engine: deduplicated (a repeat grows count and evidence), with
# the evidence event indices and the playbook actions taken.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("subject_kind", sa.String(20), nullable=False),
    sa.Column("subject_id", sa.String(200), nullable=False),
    sa.Column("dedup_key", sa.String(300), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # open, acked, resolved
    sa.Column("first_at", sa.Float, nullable=False),  # the first evidence event's time
    sa.Column("last_at", sa.Float, nullable=False),
    sa.Column("raised_at", sa.Float, nullable=False),  # when detection raised it
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON list of leaf indices
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("principal_id", sa.String(40), nullable=True),
    sa.Column("org_id", sa.String(40), nullable=True),
    sa.Column("credential_id", sa.String(40), nullable=True),
    sa.Column("incident_id", sa.String(40), nullable=True),
    sa.Column("actions", sa.Text, nullable=False, server_default="[]"),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_alerts_dedup", "dedup_key", "status"),
)

# Gateway processes on this database, each with a lease it renews while alive. Calls of an
# instance whose lease lapsed without a clean stop get an explicit "process ended" outcome.
# ``id`` is the instance's request-id prefix, so its calls are found by a range on request_id.
gateway_instances = sa.Table(
    "gateway_instances",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),  # a clean stop, or recovery by another
    sa.Column("ended_by", sa.String(40), nullable=True),  # itself, or the recovering instance
)


# Detection runs as one worker among the gateway processes sharing the database: this row is
# its lease (``holder`` until ``lease_until``), its cursor (the last ``audit_events.seq`` it
# judged), its detectors' state (compressed JSON) and the findings whose playbooks and
# notices are still to run — the cursor, the state and the alerts of a range of events are
# committed in one transaction (``garrison.store.detector_state``).
detector_state = sa.Table(
    "detector_state",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("cursor", sa.Integer, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=True),
    sa.Column("pending", sa.Text, nullable=False, server_default="[]"),
    sa.Column("holder", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# A person's sign-in identity at an OpenID provider: (issuer, subject), recorded once when
# their first sign-in redeems an invitation; never matched by email or username.
identity_links = sa.Table(
    "identity_links",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("issuer", sa.String(512), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("provider", sa.String(200), nullable=False),  # "default" or the vendor's name
    sa.Column("enrollment_id", sa.String(40), nullable=False),
    sa.Column("linked_at", sa.Float, nullable=False),
    sa.Column("linked_from", sa.String(64), nullable=True),
    sa.Column("unlinked_at", sa.Float, nullable=True),
    sa.UniqueConstraint("issuer", "subject", name="uq_identity_links_issuer_subject"),
)


# Sign-in sessions: one row per token exchange (what the access token says, never the token),
# so that one session can be named, listed and locked on its own (its id stands where a key
# id stands). Rows outlive their tokens as the record, pruned after SESSION_RECORD_KEEP_S.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("issuer", sa.String(512), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("provider", sa.String(200), nullable=False),
    sa.Column("jkt", sa.String(64), nullable=False),  # the client key's RFC 7638 thumbprint
    sa.Column("amr", sa.Text, nullable=False),  # JSON list
    sa.Column("acr", sa.String(200), nullable=True),
    sa.Column("roles", sa.Text, nullable=False),  # JSON list: what the session holds
    sa.Column("issued_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Index("ix_sessions_principal_id", "principal_id"),
)
