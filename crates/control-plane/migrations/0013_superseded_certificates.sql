-- Agent certificates a renewal replaced, kept until they expire. A renewal
-- records the certificate it replaces here and bumps the tenant's
-- revocation version in the same transaction; the dispatcher sends the
-- fingerprints (SHA-256 of the DER, hex) with the revoked agents to every
-- relay, which refuses a tunnel presenting one (CERTIFICATE_SUPERSEDED) and
-- closes an open one: an old copy of an agent's key cannot stand in for
-- the agent. `expires_at_ms` bounds the certificate's own notAfter (after
-- it, the handshake refuses the certificate anyway and the row is dropped).
CREATE TABLE superseded_certificates (
    tenant_id TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    superseded_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, cert_fingerprint)
);
CREATE INDEX superseded_certificates_by_expiry ON superseded_certificates (tenant_id, expires_at_ms);

-- The certificate the current one replaced, and the key (SHA-256 of the
-- SubjectPublicKeyInfo) of the current one: a renewal whose answer never
-- reached the agent is asked again with the previous certificate and a
-- request for the same key, which only the agent that asked the first time
-- holds (the request is signed with it). Empty until the agent's first
-- renewal.
ALTER TABLE agents ADD COLUMN previous_cert_fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN cert_key_sha256 TEXT NOT NULL DEFAULT '';
