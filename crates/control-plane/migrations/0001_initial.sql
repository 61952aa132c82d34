-- The control plane's schema. One portable set of statements for SQLite and
-- PostgreSQL: TEXT, BIGINT only (flags are 0/1 BIGINTs, timestamps are Unix
-- milliseconds), because the store talks through sqlx's Any driver.
-- Every table carries tenant_id. No secret is stored in plaintext: token
-- columns hold lowercase hex SHA-256 hashes.

-- Tenants and their three writeback toggles (all off for a new tenant).
CREATE TABLE tenants (
    tenant_id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Password writeback in cloud sync (global administrator only).
    cloud_sync_writeback BIGINT NOT NULL DEFAULT 0 CHECK (cloud_sync_writeback IN (0, 1)),
    -- "Write back passwords to your on-premises directory?"
    sspr_writeback BIGINT NOT NULL DEFAULT 0 CHECK (sspr_writeback IN (0, 1)),
    -- "Allow users to unlock accounts without resetting their password?"
    unlock_without_reset BIGINT NOT NULL DEFAULT 0 CHECK (unlock_without_reset IN (0, 1)),
    settings_updated_at_ms BIGINT
);

-- On-premises AD domains (DNS names, lowercase).
CREATE TABLE domains (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- UPN suffixes (lowercase); each belongs to exactly one domain of a tenant.
CREATE TABLE upn_suffixes (
    tenant_id TEXT NOT NULL,
    suffix TEXT NOT NULL,
    domain TEXT NOT NULL,
    PRIMARY KEY (tenant_id, suffix),
    FOREIGN KEY (tenant_id, domain) REFERENCES domains (tenant_id, name)
);
CREATE INDEX upn_suffixes_by_domain ON upn_suffixes (tenant_id, domain);

-- Principals (administrators and users) and their role.
CREATE TABLE principals (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('global_admin', 'password_admin', 'user')),
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Bearer tokens: one principal, one client application (the origin).
CREATE TABLE api_tokens (
    tenant_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    client_app TEXT NOT NULL CHECK (client_app IN ('portal', 'graph', 'powershell', 'm365_admin_center')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT,
    PRIMARY KEY (tenant_id, token_id),
    FOREIGN KEY (tenant_id, principal) REFERENCES principals (tenant_id, name)
);

-- One-time agent enrollment tokens. token_id is public (it travels in the
-- token), secret_hash is the SHA-256 of the secret part.
CREATE TABLE enrollment_tokens (
    token_id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    FOREIGN KEY (tenant_id, domain) REFERENCES domains (tenant_id, name)
);
CREATE INDEX enrollment_tokens_by_domain ON enrollment_tokens (tenant_id, domain);

-- Enrolled agents. envelope_public_key is hex (no portable BLOB type).
CREATE TABLE agents (
    tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    envelope_public_key TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    PRIMARY KEY (tenant_id, agent_id),
    FOREIGN KEY (tenant_id, domain) REFERENCES domains (tenant_id, name)
);
CREATE INDEX agents_by_domain ON agents (tenant_id, domain, agent_id);

-- The audit log: one row per operation, written as pending before dispatch.
-- Holds no password and no token.
CREATE TABLE operations (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    domain TEXT NOT NULL,
    principal TEXT NOT NULL,
    client_app TEXT NOT NULL CHECK (client_app IN ('portal', 'graph', 'powershell', 'm365_admin_center')),
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed')),
    reason_code TEXT,
    message TEXT,
    agent_id TEXT,
    relay_id TEXT,
    created_at_ms BIGINT NOT NULL,
    deadline_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    agent_duration_ms BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX operations_newest ON operations (tenant_id, created_at_ms, id);
CREATE INDEX operations_by_target ON operations (tenant_id, target, created_at_ms);
CREATE INDEX operations_pending ON operations (state, deadline_at_ms);
