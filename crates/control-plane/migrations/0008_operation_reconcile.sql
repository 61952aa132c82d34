-- Operations whose outcome is not known yet (a relay or the control plane
-- stopped, or an answer was lost, after the operation may have reached an
-- agent). Such a record is failed with TIMEOUT and carries the instant of
-- its next reconciliation: the control plane then asks the domain's agents'
-- ledgers and records the truth (and clears the column), or tries again
-- later. NULL for every operation whose outcome is known.
ALTER TABLE operations ADD COLUMN reconcile_after_ms BIGINT;
CREATE INDEX operations_reconcile ON operations (reconcile_after_ms);
