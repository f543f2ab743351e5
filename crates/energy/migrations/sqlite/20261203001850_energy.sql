-- Device groups of a factory: one hierarchy (site → area → line → machine, any depth)
-- and flat tag groups.
CREATE TABLE energy_groups (
    factory_id  TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    parent_id   TEXT NULL,
    level       TEXT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (factory_id, group_id)
);
CREATE INDEX energy_groups_parent ON energy_groups (factory_id, parent_id);

-- Members of a group. `hierarchy_device` repeats device_id for hierarchy groups (NULL
-- for tags), so the unique index keeps a device in at most one hierarchy group.
CREATE TABLE energy_group_devices (
    factory_id       TEXT NOT NULL,
    group_id         TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    hierarchy_device TEXT NULL,
    PRIMARY KEY (factory_id, group_id, device_id)
);
CREATE UNIQUE INDEX energy_group_devices_hierarchy ON energy_group_devices (factory_id, hierarchy_device);
CREATE INDEX energy_group_devices_device ON energy_group_devices (factory_id, device_id);

-- Versioned settings (tariff, shifts, emission factor): appended, never rewritten.
-- valid_from is a local date (YYYY-MM-DD) or NULL on the first version (since always).
CREATE TABLE energy_settings (
    factory_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    valid_from  TEXT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (factory_id, kind, version)
);

-- Per-device energy configuration; absent = defaults.
CREATE TABLE energy_device_config (
    factory_id      TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    source_property TEXT NULL,
    state_property  TEXT NULL,
    idle_below_kw   REAL NULL,
    max_gap_minutes INTEGER NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (factory_id, device_id)
);

-- EnPI baselines: a fitted model per (name, target); a new fit of the same name and
-- target is the next version. Drivers and the model are JSON.
CREATE TABLE energy_baselines (
    factory_id    TEXT NOT NULL,
    baseline_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    target_kind   TEXT NOT NULL,
    target_id     TEXT NOT NULL,
    drivers       TEXT NOT NULL,
    period_from   TEXT NOT NULL,
    period_to     TEXT NOT NULL,
    model         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (factory_id, baseline_id)
);
CREATE UNIQUE INDEX energy_baselines_version ON energy_baselines (factory_id, name, target_kind, target_id, version);
