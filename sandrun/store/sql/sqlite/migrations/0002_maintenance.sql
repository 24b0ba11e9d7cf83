-- 0002: indexes for `sandrun gc` (terminal jobs by age, artifacts still referenced).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX outputs_digest ON outputs (digest);
