-- 0014: dependencies between jobs, and pipelines (issue 22).
-- A job waits (state 'waiting') while deps_left of its dependencies have not ended; each
-- edge says which end it needs. A pipeline's steps are jobs; a fan-out step's items too.
ALTER TABLE jobs ADD COLUMN pipeline_id TEXT;
ALTER TABLE jobs ADD COLUMN step TEXT;
ALTER TABLE jobs ADD COLUMN item INTEGER;
ALTER TABLE jobs ADD COLUMN items INTEGER;
ALTER TABLE jobs ADD COLUMN deps_left INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN result TEXT;
ALTER TABLE jobs ADD COLUMN cache_key TEXT;
-- waited_on: some job waits for this one (its end then looks for its waiters).
ALTER TABLE jobs ADD COLUMN waited_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cached_from TEXT;
CREATE INDEX jobs_pipeline ON jobs (pipeline_id, step, item) WHERE pipeline_id IS NOT NULL;
CREATE INDEX jobs_cache ON jobs (owner, cache_key, finished_at)
    WHERE cache_key IS NOT NULL AND state = 'completed';

CREATE TABLE job_deps (
    job_id    TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    dep_id    TEXT NOT NULL,
    condition TEXT NOT NULL,
    PRIMARY KEY (job_id, dep_id)
);
CREATE INDEX job_deps_dep ON job_deps (dep_id);

CREATE TABLE pipelines (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    owner            TEXT NOT NULL,
    state            TEXT NOT NULL,
    definition       TEXT NOT NULL,
    retry_of         TEXT,
    jobs_left        INTEGER NOT NULL,
    failures         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    finished_at      REAL
);
CREATE INDEX pipelines_owner ON pipelines (owner, created_at DESC);

CREATE TABLE pipeline_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX pipeline_events_pipeline ON pipeline_events (pipeline_id, id);
