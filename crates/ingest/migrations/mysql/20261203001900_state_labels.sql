-- State labels (ADR 0014): a state property's values are stored in the time series as
-- codes; this is the code <-> label dictionary per (factory, property name). Never deleted.
CREATE TABLE ingest_state_labels (
    factory_id VARCHAR(63) NOT NULL,
    property   VARCHAR(128) NOT NULL,
    code       INT NOT NULL,
    label      VARCHAR(255) NOT NULL,
    PRIMARY KEY (factory_id, property, code),
    UNIQUE INDEX ingest_state_labels_label (factory_id, property, label)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
