-- Replicas sharing this database: each one's row is rewritten on every
-- heartbeat with what it serves, so any replica can tell who is alive and
-- who has converged on the deploy history. A replica silent for long is
-- dropped by the others.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- JSON: component name -> world, as this replica's config has them.
    components   TEXT NOT NULL,
    -- JSON: component name -> {version, canary, breaker}.
    serving      TEXT NOT NULL,
    -- JSON: the components it could not bring to their deployed version.
    diverged     TEXT NOT NULL
);
