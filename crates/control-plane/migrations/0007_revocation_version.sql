-- A tenant's revocation counter: bumped in the same transaction as every
-- agent revocation. It versions the list of revoked agents the dispatcher
-- sends to relays, which refuse a list older than the one they hold, so a
-- replica that read the store before a revocation cannot readmit the agent.
ALTER TABLE tenants ADD COLUMN revocation_version BIGINT NOT NULL DEFAULT 0;
