-- Durable jobs (analytics, reports, notifications): leased, retried, never lost on restart.
CREATE TABLE jobs (
    id              VARCHAR(36) NOT NULL PRIMARY KEY,
    factory_id      VARCHAR(63) NULL,
    kind            VARCHAR(64) NOT NULL,
    payload         MEDIUMTEXT NOT NULL,
    status          VARCHAR(16) NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    max_attempts    BIGINT NOT NULL,
    run_after       BIGINT NOT NULL,
    lease_owner     VARCHAR(64) NULL,
    lease_until     BIGINT NULL,
    last_error      TEXT NULL,
    idempotency_key VARCHAR(191) NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    INDEX jobs_ready (status, run_after)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Events written in the same transaction as the state change they describe,
-- relayed to the bus afterwards (transactional outbox).
CREATE TABLE outbox (
    seq          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    factory_id   VARCHAR(63) NULL,
    topic        VARCHAR(64) NOT NULL,
    event_key    VARCHAR(191) NOT NULL UNIQUE,
    payload      MEDIUMTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT NULL,
    INDEX outbox_pending (published_at, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
