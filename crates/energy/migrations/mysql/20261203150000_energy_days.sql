-- Persisted energy of closed local days (ADR 0017): per device and local day, its
-- 15-minute slots (kWh, idle kWh, covered time) and gaps in a compact blob, computed from
-- the raw points once the day has closed, so a month is read without scanning raw points
-- and a day keeps its energy after raw retention dropped its points. `window_*` is the
-- raw-read window the day was computed from: a late point inside it marks the day dirty.
-- `source` names what it was computed from (property, semantics, gap, idle settings).
CREATE TABLE energy_days (
    factory_id  VARCHAR(63) NOT NULL,
    device_id   VARCHAR(63) NOT NULL,
    day_start   BIGINT NOT NULL,
    day_end     BIGINT NOT NULL,
    window_from BIGINT NOT NULL,
    window_to   BIGINT NOT NULL,
    source      TEXT NOT NULL,
    properties  TEXT NOT NULL,
    body        BLOB NOT NULL,
    dirty       BIGINT NOT NULL,
    computed_at BIGINT NOT NULL,
    PRIMARY KEY (factory_id, device_id, day_start)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
