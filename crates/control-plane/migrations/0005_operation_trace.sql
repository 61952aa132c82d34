-- Where an operation's time went and how it can be followed: its trace id
-- (W3C, 32 hex digits), the policy rule that allowed it, and per hop the
-- relay's time (queue and transit, agent included), the agent's time in the
-- directory and the domain controller that answered.
ALTER TABLE operations ADD COLUMN trace_id TEXT;
ALTER TABLE operations ADD COLUMN rule TEXT;
ALTER TABLE operations ADD COLUMN relay_duration_ms BIGINT;
ALTER TABLE operations ADD COLUMN directory_duration_ms BIGINT;
ALTER TABLE operations ADD COLUMN dc_url TEXT;
