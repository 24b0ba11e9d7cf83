-- 0018: paused jobs (`sandrun pause`, issue 25) hold their slots as running ones do, so
-- each owner's running work (jobs_active, read by fair share) counts them too.
DROP INDEX jobs_active;
CREATE INDEX jobs_active ON jobs (owner) WHERE state IN ('scheduled', 'running', 'paused');
