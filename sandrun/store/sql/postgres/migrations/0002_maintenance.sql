-- 0002: indexes for `sandrun gc` (terminal jobs by age, artifacts still referenced), and
-- autovacuum tuned for a queue table: every job's row is updated several times, and a
-- claim's plan needs fresh statistics after a burst of submits.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX outputs_digest ON outputs (digest);
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 200,
                      autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200);
