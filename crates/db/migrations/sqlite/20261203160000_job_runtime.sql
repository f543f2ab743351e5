-- The job runtime (ADR 0018): progress (parts per million: integers read the same on both backends), cooperative cancel, timestamps of the current
-- attempt, the handler's output and a short log. `dead` becomes `failed`, the status the
-- API shows (nothing used the queue before this).
ALTER TABLE jobs ADD COLUMN progress_ppm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN started_at INTEGER NULL;
ALTER TABLE jobs ADD COLUMN finished_at INTEGER NULL;
ALTER TABLE jobs ADD COLUMN output TEXT NULL;
ALTER TABLE jobs ADD COLUMN log TEXT NULL;
UPDATE jobs SET status = 'failed' WHERE status = 'dead';
CREATE INDEX jobs_factory_kind ON jobs (factory_id, kind, created_at);
