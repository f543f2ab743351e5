-- Responses to POST requests sent with an `Idempotency-Key` (ADR 0012), kept for 24 h so a
-- retried request gets the first answer instead of running twice. `id` is the SHA-256 of
-- (factory, principal, key): a key is only ever looked up within its own principal.
CREATE TABLE idempotency_keys (
    id                    TEXT PRIMARY KEY NOT NULL,
    factory_id            TEXT NULL,
    principal             TEXT NOT NULL,
    request_hash          TEXT NOT NULL,
    state                 TEXT NOT NULL,
    locked_until          INTEGER NOT NULL,
    response_status       INTEGER NULL,
    response_content_type TEXT NULL,
    response_body         TEXT NULL,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
