-- Dataset records (ADR 0019): the job state of an export and, once it succeeded, the
-- manifest of its file. The file itself is in the object store at
-- {factory_id}/datasets/{sha256}.parquet; several records may share one sha256.
CREATE TABLE datasets (
    factory_id   TEXT NOT NULL,
    dataset_id   TEXT NOT NULL,
    status       TEXT NOT NULL,
    progress     REAL NOT NULL,
    attempts     INTEGER NOT NULL,
    error        TEXT NULL,
    query_json   TEXT NOT NULL,
    sha256       TEXT NULL,
    row_count    INTEGER NULL,
    column_count INTEGER NULL,
    value_count  INTEGER NULL,
    byte_count   INTEGER NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER NULL,
    PRIMARY KEY (factory_id, dataset_id)
);
CREATE INDEX datasets_created ON datasets (factory_id, created_at);
CREATE INDEX datasets_sha256 ON datasets (factory_id, sha256);

-- What uses a dataset (an analytics run, a model version). A referenced dataset is never
-- deleted, whatever the retention policy says.
CREATE TABLE dataset_references (
    factory_id  TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    ref_kind    TEXT NOT NULL,
    ref_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (factory_id, dataset_id, ref_kind, ref_id)
);
