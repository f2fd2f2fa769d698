-- Every version of every component, so a deploy survives restarts and
-- replicas can load what another replica accepted. Old versions are pruned
-- to the configured number per component.
CREATE TABLE component_versions (
    component  TEXT NOT NULL,
    digest     TEXT NOT NULL,
    bytes      BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (component, digest)
);

-- Each accepted deploy or rollback, newest last: the active version of a
-- component is its latest row; "previous" is the one before.
CREATE TABLE deployments (
    id          TEXT PRIMARY KEY,
    component   TEXT NOT NULL,
    digest      TEXT NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    deployed_at BIGINT NOT NULL
);

CREATE INDEX deployments_by_component ON deployments (component, deployed_at);

-- Append-only record of deploys, rollbacks and refused admin requests.
-- Each row's hash covers its contents and the previous row's hash, so an
-- edited or deleted row breaks the chain (`switchyard audit verify`).
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    component TEXT,
    version   TEXT,
    result    TEXT NOT NULL,
    reason    TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
