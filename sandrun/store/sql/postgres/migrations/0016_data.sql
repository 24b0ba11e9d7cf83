-- 0016: data (issue 24): named volumes, the jobs that mount them, secrets, environments.
-- A volume's bytes live on one node (`node`, a node name, set by the first job that runs
-- with it); its row stays, marked deleted, until that node has purged them.
CREATE TABLE volumes (
    id         text PRIMARY KEY,
    owner      text NOT NULL,
    name       text NOT NULL,
    size_mb    bigint NOT NULL,
    shared     integer NOT NULL DEFAULT 0,
    node       text,
    created_at double precision NOT NULL,
    deleted_at double precision
);
CREATE UNIQUE INDEX volumes_name ON volumes (owner, name) WHERE deleted_at IS NULL;
-- Which jobs mount which volumes, and whether they write: two unfinished writers of one
-- volume that is not shared are refused at submit.
CREATE TABLE job_volumes (
    job_id    text NOT NULL,
    volume_id text NOT NULL,
    writes    integer NOT NULL,
    PRIMARY KEY (job_id, volume_id)
);
CREATE INDEX job_volumes_volume ON job_volumes (volume_id);
-- Secrets, sealed with the server's key (AES-GCM, bound to owner and name): the database
-- alone never holds a value.
CREATE TABLE secrets (
    owner      text NOT NULL,
    name       text NOT NULL,
    sealed     text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (owner, name)
);

-- Named environments, created ahead: a Python version and requirements (JSON) that an
-- agent builds with uv when a job names the environment.
CREATE TABLE environments (
    owner      text NOT NULL,
    name       text NOT NULL,
    spec       text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (owner, name)
);
