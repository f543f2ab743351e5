-- State labels (ADR 0014): a state property's values are stored in the time series as
-- codes; this is the code <-> label dictionary per (factory, property name). Never deleted.
CREATE TABLE ingest_state_labels (
    factory_id TEXT NOT NULL,
    property   TEXT NOT NULL,
    code       INTEGER NOT NULL,
    label      TEXT NOT NULL,
    PRIMARY KEY (factory_id, property, code)
);
CREATE UNIQUE INDEX ingest_state_labels_label ON ingest_state_labels (factory_id, property, label);
