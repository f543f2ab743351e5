-- Property semantics (issue 18): what a property measures, for the energy figures.
-- NULL quantity = not annotated; `unit` keeps its meaning (free text without a quantity).
ALTER TABLE ingest_properties
    ADD COLUMN quantity VARCHAR(32) NULL,
    ADD COLUMN rollover DOUBLE NULL,
    ADD COLUMN wh_per_pulse DOUBLE NULL,
    ADD COLUMN counting VARCHAR(16) NULL;
