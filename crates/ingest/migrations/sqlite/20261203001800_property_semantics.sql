-- Property semantics (issue 18): what a property measures, for the energy figures.
-- NULL quantity = not annotated; `unit` keeps its meaning (free text without a quantity).
ALTER TABLE ingest_properties ADD COLUMN quantity TEXT NULL;
ALTER TABLE ingest_properties ADD COLUMN rollover REAL NULL;
ALTER TABLE ingest_properties ADD COLUMN wh_per_pulse REAL NULL;
ALTER TABLE ingest_properties ADD COLUMN counting TEXT NULL;
