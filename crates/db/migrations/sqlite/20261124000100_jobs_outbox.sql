-- Durable jobs (analytics, reports, notifications): leased, retried, never lost on restart.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY NOT NULL,
    factory_id      TEXT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    run_after       INTEGER NOT NULL,
    lease_owner     TEXT NULL,
    lease_until     INTEGER NULL,
    last_error      TEXT NULL,
    idempotency_key TEXT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_after);

-- Events written in the same transaction as the state change they describe,
-- relayed to the bus afterwards (transactional outbox).
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    factory_id   TEXT NULL,
    topic        TEXT NOT NULL,
    event_key    TEXT NOT NULL UNIQUE,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER NULL
);
CREATE INDEX outbox_pending ON outbox (published_at, seq);
