-- Devices of a factory: metadata, status and the hash of the current MQTT secret.
CREATE TABLE ingest_devices (
    factory_id    VARCHAR(63) NOT NULL,
    device_id     VARCHAR(63) NOT NULL,
    name          VARCHAR(255) NOT NULL,
    device_type   VARCHAR(255) NOT NULL,
    location      VARCHAR(255) NOT NULL,
    metadata      MEDIUMTEXT NOT NULL,
    status        VARCHAR(16) NOT NULL,
    secret_hash   VARCHAR(64) NULL,
    secret_set_at BIGINT NULL,
    last_seen     BIGINT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (factory_id, device_id),
    INDEX ingest_devices_type (factory_id, device_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Auto-discovered properties; never deleted.
CREATE TABLE ingest_properties (
    factory_id  VARCHAR(63) NOT NULL,
    device_id   VARCHAR(63) NOT NULL,
    name        VARCHAR(128) NOT NULL,
    value_type  VARCHAR(16) NOT NULL,
    unit        VARCHAR(64) NULL,
    description TEXT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (factory_id, device_id, name),
    INDEX ingest_properties_factory (factory_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
