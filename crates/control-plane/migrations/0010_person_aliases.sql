-- Which throttle keys name one person: a user addressed by UPN (`upn:…`)
-- and by objectGUID (`guid:…`) is one person, learnt from the agents'
-- answers (the user they found). `person` is the `guid:…` key. The
-- throttle counts a person's operations under every alias.
CREATE TABLE person_aliases (
    tenant_id TEXT NOT NULL,
    alias TEXT NOT NULL,
    person TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, alias)
);
CREATE INDEX person_aliases_person ON person_aliases (tenant_id, person);
