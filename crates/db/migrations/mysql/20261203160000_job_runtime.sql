-- The job runtime (ADR 0018): progress (parts per million: integers read the same on both backends), cooperative cancel, timestamps of the current
-- attempt, the handler's output and a short log. `dead` becomes `failed`, the status the
-- API shows (nothing used the queue before this).
ALTER TABLE jobs
    ADD COLUMN progress_ppm BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN started_at BIGINT NULL,
    ADD COLUMN finished_at BIGINT NULL,
    ADD COLUMN output MEDIUMTEXT NULL,
    ADD COLUMN log MEDIUMTEXT NULL,
    ADD INDEX jobs_factory_kind (factory_id, kind, created_at);
UPDATE jobs SET status = 'failed' WHERE status = 'dead';
