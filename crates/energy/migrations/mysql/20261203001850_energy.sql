-- Device groups of a factory: one hierarchy (site → area → line → machine, any depth)
-- and flat tag groups.
CREATE TABLE energy_groups (
    factory_id  VARCHAR(63) NOT NULL,
    group_id    VARCHAR(36) NOT NULL,
    name        VARCHAR(255) NOT NULL,
    kind        VARCHAR(16) NOT NULL,
    parent_id   VARCHAR(36) NULL,
    level       VARCHAR(64) NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (factory_id, group_id),
    INDEX energy_groups_parent (factory_id, parent_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Members of a group. `hierarchy_device` repeats device_id for hierarchy groups (NULL
-- for tags), so the unique index keeps a device in at most one hierarchy group.
CREATE TABLE energy_group_devices (
    factory_id       VARCHAR(63) NOT NULL,
    group_id         VARCHAR(36) NOT NULL,
    device_id        VARCHAR(63) NOT NULL,
    hierarchy_device VARCHAR(63) NULL,
    PRIMARY KEY (factory_id, group_id, device_id),
    UNIQUE INDEX energy_group_devices_hierarchy (factory_id, hierarchy_device),
    INDEX energy_group_devices_device (factory_id, device_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Versioned settings (tariff, shifts, emission factor): appended, never rewritten.
-- valid_from is a local date (YYYY-MM-DD) or NULL on the first version (since always).
CREATE TABLE energy_settings (
    factory_id  VARCHAR(63) NOT NULL,
    kind        VARCHAR(32) NOT NULL,
    version     BIGINT NOT NULL,
    valid_from  VARCHAR(10) NULL,
    body        MEDIUMTEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  VARCHAR(255) NOT NULL,
    PRIMARY KEY (factory_id, kind, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Per-device energy configuration; absent = defaults.
CREATE TABLE energy_device_config (
    factory_id      VARCHAR(63) NOT NULL,
    device_id       VARCHAR(63) NOT NULL,
    source_property VARCHAR(128) NULL,
    state_property  VARCHAR(128) NULL,
    idle_below_kw   DOUBLE NULL,
    max_gap_minutes BIGINT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (factory_id, device_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- EnPI baselines: a fitted model per (name, target); a new fit of the same name and
-- target is the next version. Drivers and the model are JSON.
CREATE TABLE energy_baselines (
    factory_id    VARCHAR(63) NOT NULL,
    baseline_id   VARCHAR(36) NOT NULL,
    name          VARCHAR(255) NOT NULL,
    version       BIGINT NOT NULL,
    target_kind   VARCHAR(16) NOT NULL,
    target_id     VARCHAR(63) NOT NULL,
    drivers       MEDIUMTEXT NOT NULL,
    period_from   VARCHAR(10) NOT NULL,
    period_to     VARCHAR(10) NOT NULL,
    model         MEDIUMTEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    VARCHAR(255) NOT NULL,
    PRIMARY KEY (factory_id, baseline_id),
    UNIQUE INDEX energy_baselines_version (factory_id, name, target_kind, target_id, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
