-- Dashboards as data (ADR 0022). Widgets are one JSON document: they are always read
-- and written whole, and validated by the crate before they are stored.
CREATE TABLE dashboards (
    factory_id   VARCHAR(63) NOT NULL,
    dashboard_id VARCHAR(36) NOT NULL,
    owner        VARCHAR(64) NOT NULL,
    name         VARCHAR(255) NOT NULL,
    shared       BIGINT   NOT NULL,
    is_default   BIGINT   NOT NULL,
    widgets      MEDIUMTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (factory_id, dashboard_id),
    INDEX dashboards_owner (factory_id, owner)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Each user's preferred dashboard (overrides the factory default on the Dashboard page).
CREATE TABLE dashboard_preferences (
    factory_id   VARCHAR(63) NOT NULL,
    user_id      VARCHAR(64) NOT NULL,
    dashboard_id VARCHAR(36) NOT NULL,
    PRIMARY KEY (factory_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
