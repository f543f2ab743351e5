CREATE TABLE platform_root (
    username      VARCHAR(64) NOT NULL PRIMARY KEY,
    password_hash VARCHAR(100) NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE factories (
    id         VARCHAR(63) NOT NULL PRIMARY KEY,
    name       VARCHAR(200) NOT NULL,
    timezone   VARCHAR(64) NOT NULL,
    status     VARCHAR(16) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE users (
    id            VARCHAR(36) NOT NULL PRIMARY KEY,
    factory_id    VARCHAR(63) NOT NULL,
    email         VARCHAR(254) NOT NULL,
    email_key     VARCHAR(254) NOT NULL,
    name          VARCHAR(200) NOT NULL,
    phone         VARCHAR(16) NULL,
    role          VARCHAR(16) NOT NULL,
    permissions   TEXT NOT NULL,
    password_hash VARCHAR(100) NOT NULL,
    status        VARCHAR(16) NOT NULL,
    tokens_valid_after BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE KEY users_factory_email (factory_id, email_key),
    CONSTRAINT users_factory FOREIGN KEY (factory_id) REFERENCES factories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE refresh_tokens (
    id         VARCHAR(36) NOT NULL PRIMARY KEY,
    family_id  VARCHAR(36) NOT NULL,
    factory_id VARCHAR(63) NULL,
    subject    VARCHAR(64) NOT NULL,
    token_hash VARCHAR(64) NOT NULL UNIQUE,
    status     VARCHAR(16) NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT NULL,
    INDEX refresh_tokens_family (family_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE api_keys (
    id           VARCHAR(36) NOT NULL PRIMARY KEY,
    factory_id   VARCHAR(63) NOT NULL,
    name         VARCHAR(200) NOT NULL,
    key_prefix   VARCHAR(16) NOT NULL,
    key_hash     VARCHAR(64) NOT NULL UNIQUE,
    permissions  TEXT NOT NULL,
    expires_at   BIGINT NULL,
    revoked_at   BIGINT NULL,
    created_by   VARCHAR(64) NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NULL,
    INDEX api_keys_factory (factory_id, id),
    CONSTRAINT api_keys_factory_fk FOREIGN KEY (factory_id) REFERENCES factories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Append-only: no code path updates or deletes rows here.
CREATE TABLE audit_log (
    id         VARCHAR(36) NOT NULL PRIMARY KEY,
    factory_id VARCHAR(63) NULL,
    at         BIGINT NOT NULL,
    actor      VARCHAR(128) NOT NULL,
    action     VARCHAR(64) NOT NULL,
    target     VARCHAR(254) NULL,
    source_ip  VARCHAR(64) NULL,
    detail     TEXT NOT NULL,
    INDEX audit_log_factory (factory_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
