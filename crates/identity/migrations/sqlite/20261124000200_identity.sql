CREATE TABLE platform_root (
    username      TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE factories (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    timezone   TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    factory_id    TEXT NOT NULL REFERENCES factories (id),
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL,
    name          TEXT NOT NULL,
    phone         TEXT NULL,
    role          TEXT NOT NULL,
    permissions   TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    status        TEXT NOT NULL,
    -- Tokens issued before this instant are rejected (role/permission changes, disable, password reset).
    tokens_valid_after INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (factory_id, email_key)
);

CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    family_id  TEXT NOT NULL,
    factory_id TEXT NULL,
    subject    TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    factory_id   TEXT NOT NULL REFERENCES factories (id),
    name         TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    permissions  TEXT NOT NULL,
    expires_at   INTEGER NULL,
    revoked_at   INTEGER NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NULL
);
CREATE INDEX api_keys_factory ON api_keys (factory_id, id);

-- Append-only: no code path updates or deletes rows here.
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY NOT NULL,
    factory_id TEXT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NULL,
    source_ip  TEXT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX audit_log_factory ON audit_log (factory_id, id);
