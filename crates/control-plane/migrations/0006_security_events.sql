-- The security trail: refused authentications, refused password operations
-- and refused enrollments, written by a rate-limited background recorder
-- (crates/control-plane/src/security_audit.rs). Portable SQLite/PostgreSQL
-- statements (TEXT and BIGINT only). No column ever holds a password or a
-- token: a refused token is described by its kind, its id when the store
-- knows it, and the claims it makes.
CREATE TABLE security_events (
    -- '' when no tenant could be told (an unknown token, a malformed one):
    -- such rows are served to no tenant.
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    -- 'authentication_failed', 'operation_refused', 'enrollment_refused',
    -- 'events_dropped'.
    kind TEXT NOT NULL,
    -- The stable reason code answered (UNAUTHENTICATED, THROTTLED…).
    reason_code TEXT NOT NULL,
    -- A finer stable code, e.g. 'token_expired', 'policy', '' when none.
    detail TEXT NOT NULL,
    -- Who (or whom the refused credential claimed to be); '' when unknown.
    principal TEXT NOT NULL,
    client_app TEXT NOT NULL,
    -- The operation's target ('upn:…' or 'guid:…'), '' for other kinds.
    target TEXT NOT NULL,
    -- The operation's kind ('reset', 'change'…), '' for other kinds.
    operation TEXT NOT NULL,
    -- The client's address as the control plane saw it; '' when unknown.
    source TEXT NOT NULL,
    -- The sentence the caller was answered with.
    message TEXT NOT NULL,
    -- On a summary row: how many similar events were not written.
    suppressed BIGINT NOT NULL,
    -- JSON object; never a secret.
    details TEXT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX security_events_newest ON security_events (tenant_id, at_ms, event_id);
