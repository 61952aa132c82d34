-- A tenant's custom banned-password terms (normalized, lowercase); they add
-- to the built-in list of common passwords compiled into writeback.
CREATE TABLE banned_passwords (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    term TEXT NOT NULL,
    PRIMARY KEY (tenant_id, term)
);
