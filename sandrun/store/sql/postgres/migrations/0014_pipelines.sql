-- 0014: dependencies between jobs, and pipelines (issue 22).
-- A job waits (state 'waiting') while deps_left of its dependencies have not ended; each
-- edge says which end it needs. A pipeline's steps are jobs; a fan-out step's items too.
ALTER TABLE jobs ADD COLUMN pipeline_id text;
ALTER TABLE jobs ADD COLUMN step text;
ALTER TABLE jobs ADD COLUMN item integer;
ALTER TABLE jobs ADD COLUMN items integer;
ALTER TABLE jobs ADD COLUMN deps_left integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN result text;
ALTER TABLE jobs ADD COLUMN cache_key text;
-- waited_on: some job waits for this one (its end then looks for its waiters).
ALTER TABLE jobs ADD COLUMN waited_on integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cached_from text;
CREATE INDEX jobs_pipeline ON jobs (pipeline_id, step, item) WHERE pipeline_id IS NOT NULL;
CREATE INDEX jobs_cache ON jobs (owner, cache_key, finished_at)
    WHERE cache_key IS NOT NULL AND state = 'completed';

CREATE TABLE job_deps (
    job_id    text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    dep_id    text NOT NULL,
    condition text NOT NULL,
    PRIMARY KEY (job_id, dep_id)
);
CREATE INDEX job_deps_dep ON job_deps (dep_id);

CREATE TABLE pipelines (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    owner            text NOT NULL,
    state            text NOT NULL,
    definition       text NOT NULL,
    retry_of         text,
    jobs_left        integer NOT NULL,
    failures         integer NOT NULL DEFAULT 0,
    cancel_requested integer NOT NULL DEFAULT 0,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    finished_at      double precision
);
CREATE INDEX pipelines_owner ON pipelines (owner, created_at DESC);

CREATE TABLE pipeline_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id text NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    message     text NOT NULL,
    at          double precision NOT NULL
);
CREATE INDEX pipeline_events_pipeline ON pipeline_events (pipeline_id, id);
