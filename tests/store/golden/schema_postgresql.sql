CREATE TABLE access_requests (
	id VARCHAR(40) NOT NULL, 
	principal_id VARCHAR(40) NOT NULL, 
	model_id VARCHAR(40) NOT NULL, 
	duration_s FLOAT NOT NULL, 
	reason VARCHAR(500) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	created_at FLOAT NOT NULL, 
	expires_at FLOAT NOT NULL, 
	approvals TEXT DEFAULT '[]' NOT NULL, 
	decided_at FLOAT, 
	decided_by VARCHAR(200), 
	decision_reason VARCHAR(500), 
	PRIMARY KEY (id)
)

CREATE TABLE alerts (
	seq SERIAL NOT NULL, 
	id VARCHAR(40) NOT NULL, 
	rule_id VARCHAR(64) NOT NULL, 
	title VARCHAR(200) NOT NULL, 
	severity VARCHAR(10) NOT NULL, 
	reason VARCHAR(64) NOT NULL, 
	subject_kind VARCHAR(20) NOT NULL, 
	subject_id VARCHAR(200) NOT NULL, 
	dedup_key VARCHAR(300) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	first_at FLOAT NOT NULL, 
	last_at FLOAT NOT NULL, 
	raised_at FLOAT NOT NULL, 
	count INTEGER NOT NULL, 
	evidence TEXT NOT NULL, 
	data TEXT NOT NULL, 
	principal_id VARCHAR(40), 
	org_id VARCHAR(40), 
	credential_id VARCHAR(40), 
	incident_id VARCHAR(40), 
	actions TEXT DEFAULT '[]' NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (seq), 
	UNIQUE (id)
)

CREATE INDEX ix_alerts_dedup ON alerts (dedup_key, status)

CREATE TABLE audit_captures (
	request_id VARCHAR(40) NOT NULL, 
	at FLOAT NOT NULL, 
	sealed BYTEA NOT NULL, 
	PRIMARY KEY (request_id)
)

CREATE TABLE audit_checkpoints (
	seq SERIAL NOT NULL, 
	tree_size INTEGER NOT NULL, 
	at FLOAT NOT NULL, 
	body BYTEA NOT NULL, 
	edge BYTEA NOT NULL, 
	PRIMARY KEY (seq)
)

CREATE TABLE audit_events (
	seq SERIAL NOT NULL, 
	at FLOAT NOT NULL, 
	name VARCHAR(60) NOT NULL, 
	request_id VARCHAR(40), 
	principal_id VARCHAR(40), 
	credential_id VARCHAR(40), 
	model VARCHAR(200), 
	record BYTEA NOT NULL, 
	leaf_hash BYTEA, 
	PRIMARY KEY (seq)
)

CREATE INDEX ix_audit_events_credential_id ON audit_events (credential_id, seq)

CREATE INDEX ix_audit_events_principal_id ON audit_events (principal_id, seq)

CREATE INDEX ix_audit_events_request_id ON audit_events (request_id)

CREATE TABLE audit_outbox (
	seq SERIAL NOT NULL, 
	at FLOAT NOT NULL, 
	name VARCHAR(60) NOT NULL, 
	request_id VARCHAR(40), 
	principal_id VARCHAR(40), 
	credential_id VARCHAR(40), 
	model VARCHAR(200), 
	record BYTEA NOT NULL, 
	PRIMARY KEY (seq)
)

CREATE TABLE change_feed (
	seq SERIAL NOT NULL, 
	at FLOAT NOT NULL, 
	entity VARCHAR(40) NOT NULL, 
	entity_id VARCHAR(40) NOT NULL, 
	op VARCHAR(20) NOT NULL, 
	PRIMARY KEY (seq)
)

CREATE TABLE detector_state (
	id VARCHAR(40) NOT NULL, 
	cursor INTEGER NOT NULL, 
	state BYTEA, 
	pending TEXT DEFAULT '[]' NOT NULL, 
	holder VARCHAR(64), 
	lease_until FLOAT DEFAULT '0' NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (id)
)

CREATE TABLE gateway_instances (
	id VARCHAR(40) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	started_at FLOAT NOT NULL, 
	lease_until FLOAT NOT NULL, 
	ended_at FLOAT, 
	ended_by VARCHAR(40), 
	PRIMARY KEY (id)
)

CREATE TABLE grants (
	id VARCHAR(40) NOT NULL, 
	request_id VARCHAR(40) NOT NULL, 
	principal_id VARCHAR(40) NOT NULL, 
	model_id VARCHAR(40) NOT NULL, 
	starts_at FLOAT NOT NULL, 
	expires_at FLOAT NOT NULL, 
	revoked_at FLOAT, 
	revoked_by VARCHAR(200), 
	PRIMARY KEY (id)
)

CREATE TABLE incidents (
	id VARCHAR(40) NOT NULL, 
	title VARCHAR(200) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	opened_by VARCHAR(200) NOT NULL, 
	opened_at FLOAT NOT NULL, 
	since FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	subjects TEXT DEFAULT '{}' NOT NULL, 
	PRIMARY KEY (id)
)

CREATE TABLE models (
	id VARCHAR(40) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	upstream_url VARCHAR(2000) NOT NULL, 
	upstream_model VARCHAR(200) NOT NULL, 
	api VARCHAR(20) NOT NULL, 
	auth_style VARCHAR(20) NOT NULL, 
	level INTEGER NOT NULL, 
	compartments TEXT NOT NULL, 
	upstream_key_sealed BYTEA, 
	created_at FLOAT NOT NULL, 
	requires_justification BOOLEAN DEFAULT false NOT NULL, 
	extra_fields TEXT DEFAULT '[]' NOT NULL, 
	upstream_tls TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (name)
)

CREATE TABLE orgs (
	id VARCHAR(40) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	created_at FLOAT NOT NULL, 
	sponsor_id VARCHAR(40), 
	contract_start FLOAT, 
	contract_end FLOAT, 
	networks TEXT DEFAULT '[]' NOT NULL, 
	seat_limit INTEGER, 
	ceiling_level INTEGER, 
	ceiling_compartments TEXT DEFAULT '[]' NOT NULL, 
	security_review_at FLOAT, 
	agreement_ref VARCHAR(200) DEFAULT '' NOT NULL, 
	status VARCHAR(20) DEFAULT 'active' NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
)

CREATE TABLE pending_changes (
	id VARCHAR(40) NOT NULL, 
	kind VARCHAR(40) NOT NULL, 
	target VARCHAR(200) NOT NULL, 
	payload TEXT NOT NULL, 
	summary VARCHAR(500) NOT NULL, 
	requested_by VARCHAR(200) NOT NULL, 
	requested_at FLOAT NOT NULL, 
	expires_at FLOAT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	decided_by VARCHAR(200), 
	decided_at FLOAT, 
	PRIMARY KEY (id)
)

CREATE TABLE policy_sets (
	version SERIAL NOT NULL, 
	text TEXT NOT NULL, 
	digest VARCHAR(64) NOT NULL, 
	created_at FLOAT NOT NULL, 
	proposed_by VARCHAR(200) NOT NULL, 
	approved_by VARCHAR(200), 
	PRIMARY KEY (version)
)

CREATE TABLE incident_notes (
	seq SERIAL NOT NULL, 
	incident_id VARCHAR(40) NOT NULL, 
	at FLOAT NOT NULL, 
	author VARCHAR(200) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	text TEXT NOT NULL, 
	PRIMARY KEY (seq), 
	FOREIGN KEY(incident_id) REFERENCES incidents (id)
)

CREATE TABLE locks (
	id VARCHAR(40) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	target VARCHAR(200) NOT NULL, 
	target_name VARCHAR(200) NOT NULL, 
	reason VARCHAR(500) NOT NULL, 
	created_by VARCHAR(200) NOT NULL, 
	created_at FLOAT NOT NULL, 
	expires_at FLOAT, 
	incident_id VARCHAR(40), 
	lifted_at FLOAT, 
	lifted_by VARCHAR(200), 
	lift_reason VARCHAR(500), 
	lift_requested_by VARCHAR(200), 
	lift_requested_at FLOAT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(incident_id) REFERENCES incidents (id)
)

CREATE INDEX ix_locks_lifted_at ON locks (lifted_at)

CREATE TABLE principals (
	id VARCHAR(40) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	org_id VARCHAR(40) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	clearance INTEGER NOT NULL, 
	compartments TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	created_at FLOAT NOT NULL, 
	roles TEXT DEFAULT '[]' NOT NULL, 
	owner_id VARCHAR(40), 
	invited_by VARCHAR(200), 
	PRIMARY KEY (id), 
	UNIQUE (name), 
	FOREIGN KEY(org_id) REFERENCES orgs (id)
)

CREATE TABLE credentials (
	id VARCHAR(40) NOT NULL, 
	principal_id VARCHAR(40) NOT NULL, 
	secret_hash BYTEA NOT NULL, 
	created_at FLOAT NOT NULL, 
	expires_at FLOAT, 
	networks TEXT NOT NULL, 
	revoked_at FLOAT, 
	note VARCHAR(200) DEFAULT '' NOT NULL, 
	canary BOOLEAN DEFAULT false NOT NULL, 
	provenance VARCHAR(20) DEFAULT 'legacy' NOT NULL, 
	created_by VARCHAR(200), 
	cert_thumbprint VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(principal_id) REFERENCES principals (id)
)

CREATE TABLE enrollments (
	id VARCHAR(40) NOT NULL, 
	code_hash BYTEA NOT NULL, 
	principal_id VARCHAR(40) NOT NULL, 
	invited_by VARCHAR(200) NOT NULL, 
	invited_with VARCHAR(40), 
	invited_from VARCHAR(64), 
	change_id VARCHAR(40), 
	created_at FLOAT NOT NULL, 
	expires_at FLOAT NOT NULL, 
	used_at FLOAT, 
	used_from VARCHAR(64), 
	credential_id VARCHAR(40), 
	revoked_at FLOAT, 
	PRIMARY KEY (id), 
	UNIQUE (code_hash), 
	FOREIGN KEY(principal_id) REFERENCES principals (id)
)

CREATE TABLE identity_links (
	id VARCHAR(40) NOT NULL, 
	principal_id VARCHAR(40) NOT NULL, 
	issuer VARCHAR(512) NOT NULL, 
	subject VARCHAR(255) NOT NULL, 
	provider VARCHAR(200) NOT NULL, 
	enrollment_id VARCHAR(40) NOT NULL, 
	linked_at FLOAT NOT NULL, 
	linked_from VARCHAR(64), 
	unlinked_at FLOAT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_identity_links_issuer_subject UNIQUE (issuer, subject), 
	FOREIGN KEY(principal_id) REFERENCES principals (id)
)

CREATE TABLE sessions (
	id VARCHAR(40) NOT NULL, 
	principal_id VARCHAR(40) NOT NULL, 
	issuer VARCHAR(512) NOT NULL, 
	subject VARCHAR(255) NOT NULL, 
	provider VARCHAR(200) NOT NULL, 
	jkt VARCHAR(64) NOT NULL, 
	amr TEXT NOT NULL, 
	acr VARCHAR(200), 
	roles TEXT NOT NULL, 
	issued_at FLOAT NOT NULL, 
	expires_at FLOAT NOT NULL, 
	address VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(principal_id) REFERENCES principals (id)
)

CREATE INDEX ix_sessions_principal_id ON sessions (principal_id)
