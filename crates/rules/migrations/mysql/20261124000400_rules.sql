-- Rule definitions (the JSON the API accepted), per factory.
CREATE TABLE rules (
    id          VARCHAR(36) NOT NULL PRIMARY KEY,
    factory_id  VARCHAR(63) NOT NULL,
    name        VARCHAR(255) NOT NULL,
    enabled     BIGINT NOT NULL,
    definition  MEDIUMTEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    INDEX rules_factory (factory_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Alerts: one row per (rule, device, opening evaluation); the idempotency key makes a
-- replayed event harmless. Deleting a rule keeps its alerts.
CREATE TABLE alerts (
    id              VARCHAR(36) NOT NULL PRIMARY KEY,
    factory_id      VARCHAR(63) NOT NULL,
    rule_id         VARCHAR(36) NOT NULL,
    rule_name       VARCHAR(255) NOT NULL,
    device_id       VARCHAR(63) NOT NULL,
    status          VARCHAR(16) NOT NULL,
    severity        VARCHAR(16) NOT NULL,
    message         TEXT NOT NULL,
    property        VARCHAR(128) NULL,
    value           VARCHAR(64) NULL,
    threshold       VARCHAR(128) NULL,
    count           BIGINT NOT NULL,
    opened_at       BIGINT NOT NULL,
    acknowledged_at BIGINT NULL,
    acknowledged_by VARCHAR(64) NULL,
    resolved_at     BIGINT NULL,
    resolved_by     VARCHAR(64) NULL,
    escalated_at    BIGINT NULL,
    updated_at      BIGINT NOT NULL,
    idempotency_key VARCHAR(191) NOT NULL,
    UNIQUE KEY alerts_key (factory_id, idempotency_key),
    INDEX alerts_factory_status (factory_id, status, id),
    INDEX alerts_factory_rule (factory_id, rule_id, id),
    INDEX alerts_factory_device (factory_id, device_id, id),
    INDEX alerts_status (status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every transition of an alert: who, when, note, value at the time.
CREATE TABLE alert_history (
    seq        BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    factory_id VARCHAR(63) NOT NULL,
    alert_id   VARCHAR(36) NOT NULL,
    at         BIGINT NOT NULL,
    status     VARCHAR(16) NOT NULL,
    actor      VARCHAR(64) NOT NULL,
    note       TEXT NULL,
    value      VARCHAR(64) NULL,
    INDEX alert_history_alert (factory_id, alert_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
