-- Persisted energy of closed local days (ADR 0017): per device and local day, its
-- 15-minute slots (kWh, idle kWh, covered time) and gaps in a compact blob, computed from
-- the raw points once the day has closed, so a month is read without scanning raw points
-- and a day keeps its energy after raw retention dropped its points. `window_*` is the
-- raw-read window the day was computed from: a late point inside it marks the day dirty.
-- `source` names what it was computed from (property, semantics, gap, idle settings).
CREATE TABLE energy_days (
    factory_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    day_start   INTEGER NOT NULL,
    day_end     INTEGER NOT NULL,
    window_from INTEGER NOT NULL,
    window_to   INTEGER NOT NULL,
    source      TEXT NOT NULL,
    properties  TEXT NOT NULL,
    body        BLOB NOT NULL,
    dirty       INTEGER NOT NULL,
    computed_at INTEGER NOT NULL,
    PRIMARY KEY (factory_id, device_id, day_start)
);
