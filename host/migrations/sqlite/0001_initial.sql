-- Key-value state of components (wasi:keyvalue), namespaced by component
-- and bucket so components never see each other's data.
CREATE TABLE kv (
    component TEXT NOT NULL,
    bucket    TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (component, bucket, key)
) WITHOUT ROWID;

-- The transactional outbox: rows are written in the same transaction as the
-- handler's key-value writes and delivered later by a connector.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    connector       TEXT NOT NULL,
    component       TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    receipt         TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);

CREATE INDEX outbox_due ON outbox (status, connector, next_attempt_at);
