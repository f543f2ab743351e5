-- The notification outbox and delivery log: one row per (event, channel, recipient),
-- written in the same transaction as the alert change that caused it. `dedupe_key`
-- makes a replayed event harmless; the worker leases rows like jobs.
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY NOT NULL,
    -- NULL for platform-health messages to the operators (never visible to a factory).
    factory_id      TEXT NULL,
    alert_id        TEXT NULL,
    kind            TEXT NOT NULL,
    severity        TEXT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    user_id         TEXT NULL,
    sender_name     TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       TEXT NULL,
    dedupe_key      TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NULL,
    last_error      TEXT NULL,
    provider_id     TEXT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER NULL
);
CREATE INDEX notifications_factory ON notifications (factory_id, id);
CREATE INDEX notifications_due ON notifications (status, channel, next_attempt_at);

-- Per-user channel preferences and quiet hours (in the factory's time zone).
CREATE TABLE notification_preferences (
    factory_id       TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    email_enabled    INTEGER NOT NULL,
    whatsapp_enabled INTEGER NOT NULL,
    quiet_from       TEXT NULL,
    quiet_to         TEXT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (factory_id, user_id)
);
