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
    diverged     TEXT NOT NULL,
    -- JSON: component -> what its stable version and canary did here,
    -- while a canary serves; the rollout's controller adds them up.
    figures      TEXT NOT NULL
);

-- The canary each component serves beside its stable version, on every
-- replica, with its share; written by the replica whose controller runs
-- the rollout. Its bytes are in component_versions.
CREATE TABLE canaries (
    component  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    weight     BIGINT NOT NULL,
    controller TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- JSON: where the rollout stands (step, share, figures before it), so
    -- another replica can take it over when its controller dies.
    rollout    TEXT NOT NULL
);
