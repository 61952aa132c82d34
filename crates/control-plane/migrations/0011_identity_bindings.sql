-- Which claim of an issuer's tokens is the person's immutable identifier
-- (`sub` for most providers; `oid` for Entra ID, `uid` for Okta), and the
-- bindings it makes: the first successful operation a person signed in
-- through an issuer makes on their own account binds the identifier to the
-- directory user the agent wrote (its objectGUID, as the `guid:…` key of
-- person_aliases). From then on, a token whose principal claim names
-- another directory user, or another identifier naming this one, is refused.
ALTER TABLE oidc_issuers ADD COLUMN subject_claim TEXT NOT NULL DEFAULT 'sub';
CREATE TABLE identity_bindings (
    tenant_id TEXT NOT NULL,
    issuer_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    person TEXT NOT NULL,
    bound_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, issuer_id, subject)
);
CREATE UNIQUE INDEX identity_bindings_person ON identity_bindings (tenant_id, issuer_id, person);
