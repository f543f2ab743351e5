-- The notification outbox and delivery log: one row per (event, channel, recipient),
-- written in the same transaction as the alert change that caused it. `dedupe_key`
-- makes a replayed event harmless; the worker leases rows like jobs.
CREATE TABLE notifications (
    id              VARCHAR(36) NOT NULL PRIMARY KEY,
    -- NULL for platform-health messages to the operators (never visible to a factory).
    factory_id      VARCHAR(63) NULL,
    alert_id        VARCHAR(36) NULL,
    kind            VARCHAR(32) NOT NULL,
    severity        VARCHAR(16) NULL,
    channel         VARCHAR(16) NOT NULL,
    recipient       VARCHAR(320) NOT NULL,
    user_id         VARCHAR(36) NULL,
    sender_name     VARCHAR(255) NOT NULL,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       MEDIUMTEXT NULL,
    dedupe_key      CHAR(64) NOT NULL UNIQUE,
    status          VARCHAR(16) NOT NULL,
    attempts        BIGINT NOT NULL,
    max_attempts    BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT NULL,
    last_error      TEXT NULL,
    provider_id     VARCHAR(255) NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT NULL,
    INDEX notifications_factory (factory_id, id),
    INDEX notifications_due (status, channel, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Per-user channel preferences and quiet hours (in the factory's time zone).
CREATE TABLE notification_preferences (
    factory_id       VARCHAR(63) NOT NULL,
    user_id          VARCHAR(36) NOT NULL,
    email_enabled    BIGINT NOT NULL,
    whatsapp_enabled BIGINT NOT NULL,
    quiet_from       VARCHAR(5) NULL,
    quiet_to         VARCHAR(5) NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (factory_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
