-- Sign-in through OpenID Connect providers, and the administrative audit
-- trail. Portable SQLite/PostgreSQL statements (TEXT and BIGINT only); lists
-- and maps are JSON text.

-- Issuers a tenant trusts. issuer_url is the exact `iss` of their tokens.
CREATE TABLE oidc_issuers (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    issuer_id TEXT NOT NULL,
    issuer_url TEXT NOT NULL,
    -- JSON array of accepted `aud` values.
    audiences TEXT NOT NULL,
    -- JSON array of accepted JWS algorithms.
    algorithms TEXT NOT NULL,
    principal_claim TEXT NOT NULL,
    role_claim TEXT NOT NULL,
    -- JSON array of {"value": …, "role": …}.
    role_mappings TEXT NOT NULL,
    -- Role of an unmapped user; NULL refuses them.
    default_role TEXT CHECK (default_role IN ('global_admin', 'password_admin', 'user')),
    clock_skew_seconds BIGINT NOT NULL,
    -- JSON object {"amr_any": […], "acr_any": […], "max_age_seconds": n}.
    strong_auth TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, issuer_id)
);
CREATE INDEX oidc_issuers_by_url ON oidc_issuers (issuer_url);

-- Client applications of those issuers. A client id is unique per issuer URL
-- across the control plane: (iss, client id) decides the tenant of a token.
CREATE TABLE oidc_clients (
    tenant_id TEXT NOT NULL,
    issuer_id TEXT NOT NULL,
    issuer_url TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_app TEXT NOT NULL CHECK (client_app IN ('portal', 'graph', 'powershell', 'm365_admin_center')),
    -- NULL: acts for signed-in users; otherwise an application with this role.
    application_role TEXT CHECK (application_role IN ('global_admin', 'password_admin', 'user')),
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, issuer_id, client_id),
    UNIQUE (issuer_url, client_id),
    FOREIGN KEY (tenant_id, issuer_id) REFERENCES oidc_issuers (tenant_id, issuer_id)
);

-- Every administrative change: who, what, on which object, with which
-- (secret-free) details.
CREATE TABLE admin_events (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    event_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    principal TEXT NOT NULL,
    client_app TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    -- JSON object; never a secret.
    details TEXT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX admin_events_newest ON admin_events (tenant_id, at_ms, event_id);
