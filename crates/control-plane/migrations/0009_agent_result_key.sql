-- The agent's result-signing public key (Ed25519, hex; empty for an agent
-- enrolled before results were signed). The control plane records an
-- agent's result — an outcome, an outcome query's ledger answer, a policy
-- report — only when it is signed with this key (writeback-envelope's
-- `results` module). Set at enrollment; an agent enrolled earlier registers
-- it at its first renewal, and until then its results are refused (and
-- GetStatus warns). Once set it is never replaced: re-enroll to change it.
ALTER TABLE agents ADD COLUMN result_signing_key TEXT NOT NULL DEFAULT '';
