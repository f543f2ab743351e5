-- Rule definitions (the JSON the API accepted), per factory.
CREATE TABLE rules (
    id          TEXT PRIMARY KEY NOT NULL,
    factory_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX rules_factory ON rules (factory_id, id);

-- Alerts: one row per (rule, device, opening evaluation); the idempotency key makes a
-- replayed event harmless. Deleting a rule keeps its alerts.
CREATE TABLE alerts (
    id              TEXT PRIMARY KEY NOT NULL,
    factory_id      TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    rule_name       TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    status          TEXT NOT NULL,
    severity        TEXT NOT NULL,
    message         TEXT NOT NULL,
    property        TEXT NULL,
    value           TEXT NULL,
    threshold       TEXT NULL,
    count           INTEGER NOT NULL,
    opened_at       INTEGER NOT NULL,
    acknowledged_at INTEGER NULL,
    acknowledged_by TEXT NULL,
    resolved_at     INTEGER NULL,
    resolved_by     TEXT NULL,
    escalated_at    INTEGER NULL,
    updated_at      INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    UNIQUE (factory_id, idempotency_key)
);
CREATE INDEX alerts_factory_status ON alerts (factory_id, status, id);
CREATE INDEX alerts_factory_rule ON alerts (factory_id, rule_id, id);
CREATE INDEX alerts_factory_device ON alerts (factory_id, device_id, id);
CREATE INDEX alerts_status ON alerts (status);

-- Every transition of an alert: who, when, note, value at the time.
CREATE TABLE alert_history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    factory_id TEXT NOT NULL,
    alert_id   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    status     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    note       TEXT NULL,
    value      TEXT NULL
);
CREATE INDEX alert_history_alert ON alert_history (factory_id, alert_id, seq);
