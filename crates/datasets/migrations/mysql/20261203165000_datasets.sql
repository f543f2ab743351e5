-- Dataset records (ADR 0019): the job state of an export and, once it succeeded, the
-- manifest of its file. The file itself is in the object store at
-- {factory_id}/datasets/{sha256}.parquet; several records may share one sha256.
CREATE TABLE datasets (
    factory_id   VARCHAR(63) NOT NULL,
    dataset_id   VARCHAR(36) NOT NULL,
    status       VARCHAR(16) NOT NULL,
    progress     DOUBLE NOT NULL,
    attempts     BIGINT NOT NULL,
    error        TEXT NULL,
    query_json   MEDIUMTEXT NOT NULL,
    sha256       CHAR(64) NULL,
    row_count    BIGINT NULL,
    column_count BIGINT NULL,
    value_count  BIGINT NULL,
    byte_count   BIGINT NULL,
    created_by   VARCHAR(255) NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT NULL,
    PRIMARY KEY (factory_id, dataset_id),
    INDEX datasets_created (factory_id, created_at),
    INDEX datasets_sha256 (factory_id, sha256)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- What uses a dataset (an analytics run, a model version). A referenced dataset is never
-- deleted, whatever the retention policy says.
CREATE TABLE dataset_references (
    factory_id  VARCHAR(63) NOT NULL,
    dataset_id  VARCHAR(36) NOT NULL,
    ref_kind    VARCHAR(16) NOT NULL,
    ref_id      VARCHAR(64) NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (factory_id, dataset_id, ref_kind, ref_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
