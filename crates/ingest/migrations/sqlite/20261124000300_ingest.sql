-- Devices of a factory: metadata, status and the hash of the current MQTT secret.
CREATE TABLE ingest_devices (
    factory_id    TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    device_type   TEXT NOT NULL,
    location      TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    status        TEXT NOT NULL,
    secret_hash   TEXT NULL,
    secret_set_at INTEGER NULL,
    last_seen     INTEGER NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (factory_id, device_id)
);
CREATE INDEX ingest_devices_type ON ingest_devices (factory_id, device_type);

-- Auto-discovered properties; never deleted.
CREATE TABLE ingest_properties (
    factory_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    value_type  TEXT NOT NULL,
    unit        TEXT NULL,
    description TEXT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (factory_id, device_id, name)
);
CREATE INDEX ingest_properties_factory ON ingest_properties (factory_id, name);
