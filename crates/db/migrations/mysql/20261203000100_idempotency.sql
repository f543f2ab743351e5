-- Responses to POST requests sent with an `Idempotency-Key` (ADR 0012), kept for 24 h so a
-- retried request gets the first answer instead of running twice. `id` is the SHA-256 of
-- (factory, principal, key): a key is only ever looked up within its own principal.
CREATE TABLE idempotency_keys (
    id                    CHAR(64) NOT NULL PRIMARY KEY,
    factory_id            VARCHAR(63) NULL,
    principal             VARCHAR(191) NOT NULL,
    request_hash          CHAR(64) NOT NULL,
    state                 VARCHAR(16) NOT NULL,
    locked_until          BIGINT NOT NULL,
    response_status       BIGINT NULL,
    response_content_type VARCHAR(191) NULL,
    response_body         MEDIUMTEXT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    INDEX idempotency_keys_expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
