-- Dashboards as data (ADR 0022). Widgets are one JSON document: they are always read
-- and written whole, and validated by the crate before they are stored.
CREATE TABLE dashboards (
    factory_id   TEXT NOT NULL,
    dashboard_id TEXT NOT NULL,
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    shared       INTEGER NOT NULL,
    is_default   INTEGER NOT NULL,
    widgets      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (factory_id, dashboard_id)
);
CREATE INDEX dashboards_owner ON dashboards (factory_id, owner);

-- Each user's preferred dashboard (overrides the factory default on the Dashboard page).
CREATE TABLE dashboard_preferences (
    factory_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    dashboard_id TEXT NOT NULL,
    PRIMARY KEY (factory_id, user_id)
);
