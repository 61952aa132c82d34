-- The outbox of e-mail notifications. Portable SQLite/PostgreSQL statements
-- (TEXT and BIGINT only, timestamps in Unix milliseconds). A row is written
-- by a cheap insert when something worth telling happened and sent by the
-- control plane's background sender; it holds the finished message (no
-- password, no token), one recipient per row.
CREATE TABLE notifications (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    id TEXT NOT NULL,
    -- 'reset', 'unlock' or 'admin_reset_attempt'.
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    -- queued: to be sent at next_attempt_at_ms; sent; failed: given up.
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    created_at_ms BIGINT NOT NULL,
    -- Attempts so far, counted when a sender claims the row; with state and
    -- next_attempt_at_ms it is the claim: a sender takes a row with an
    -- UPDATE conditional on the values it read, so one sender wins.
    attempts BIGINT NOT NULL DEFAULT 0,
    -- When it is due; while a sender holds it, the end of its lease.
    next_attempt_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT,
    -- The last sending error (the relay's answer or the connection error).
    last_error TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at_ms);
CREATE INDEX notifications_newest ON notifications (tenant_id, created_at_ms, id);
