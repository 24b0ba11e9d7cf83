-- The current schema, as the migrations build it (a test checks they agree).
-- Times are seconds since the Unix epoch, UTC (double precision, as on SQLite).
-- JSON columns stay text: the Store reads and writes them whole on both backends.

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    owner            text NOT NULL,
    state            text NOT NULL,
    spec             text NOT NULL,
    labels           text NOT NULL,
    priority         bigint NOT NULL,
    cpus             double precision NOT NULL,
    memory_mb        bigint NOT NULL,
    gpu_count        integer NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    retries_used     integer NOT NULL DEFAULT 0,
    infra_retries    integer NOT NULL DEFAULT 0,
    not_before       double precision NOT NULL,
    cancel_requested integer NOT NULL DEFAULT 0,
    exit_code        integer,
    failure_reason   text,
    message          text,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    finished_at      double precision,
    gpu_type         text,
    gpu_memory_gb    double precision NOT NULL DEFAULT 0,
    requires         text NOT NULL DEFAULT '{}',
    reserved_node    text,
    reserved_at      double precision,
    pipeline_id      text,
    step             text,
    item             integer,
    items            integer,
    deps_left        integer NOT NULL DEFAULT 0,
    result           text,
    cache_key        text,
    waited_on        integer NOT NULL DEFAULT 0,
    cached_from      text,
    replica_of       text,
    replica          integer,
    replicas         integer,
    quorum           integer,
    digest           text,
    consensus        text,
    terms            text,
    held             bigint NOT NULL DEFAULT 0,
    cost             bigint,
    prefer_trusted   integer NOT NULL DEFAULT 0,
    checkpoint       text,
    checkpoint_requested_at double precision,
    preemptions      integer NOT NULL DEFAULT 0,
    preempt_requested_at double precision
);
CREATE INDEX jobs_queue ON jobs (priority DESC, created_at, id) WHERE state = 'pending';
CREATE INDEX jobs_eligible ON jobs (not_before) WHERE state = 'pending';
CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state ON jobs (state, created_at DESC);
CREATE INDEX jobs_owner ON jobs (owner, created_at DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_owner_queue ON jobs (owner, priority DESC, created_at, id) WHERE state = 'pending';
CREATE INDEX jobs_active ON jobs (owner) WHERE state IN ('scheduled', 'running', 'paused');
CREATE INDEX jobs_reserved ON jobs (reserved_node) WHERE state = 'pending' AND reserved_node IS NOT NULL;
-- A queue table: rows churn, and claims need fresh statistics after a burst of submits.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 200,
                      autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200);
CREATE INDEX jobs_pipeline ON jobs (pipeline_id, step, item) WHERE pipeline_id IS NOT NULL;
CREATE INDEX jobs_cache ON jobs (owner, cache_key, finished_at)
    WHERE cache_key IS NOT NULL AND state = 'completed';
CREATE INDEX jobs_replicas ON jobs (replica_of) WHERE replica_of IS NOT NULL;
CREATE INDEX jobs_held ON jobs (owner) WHERE held > 0;

CREATE TABLE attempts (
    job_id           text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number           integer NOT NULL,
    state            text NOT NULL,
    node             text NOT NULL,
    token            text NOT NULL,
    lease_expires_at double precision NOT NULL,
    pid              bigint,
    pid_started_at   double precision,
    exit_code        integer,
    failure_reason   text,
    message          text,
    wall_seconds     double precision,
    cpu_seconds      double precision,
    max_rss_mb       double precision,
    scheduled_at     double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    git_commit       text,
    worker_id        text,
    signature        text,
    claim_key        text,
    cpus             double precision,
    memory_mb        integer,
    gpus             integer,
    gpu_model        text,
    stdout_sha256    text,
    meter_signature  text,
    PRIMARY KEY (job_id, number)
);
CREATE INDEX attempts_live ON attempts (lease_expires_at) WHERE state IN ('scheduled', 'running');
CREATE INDEX attempts_node ON attempts (node) WHERE state IN ('scheduled', 'running');

CREATE TABLE events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer,
    kind    text NOT NULL,
    message text NOT NULL,
    data    text NOT NULL DEFAULT '{}',
    at      double precision NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE logs (
    job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    seq     bigint NOT NULL,
    stream  text NOT NULL,
    data    bytea NOT NULL,
    at      double precision NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);

CREATE TABLE outputs (
    job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    path    text NOT NULL,
    digest  text NOT NULL,
    size    bigint NOT NULL,
    PRIMARY KEY (job_id, attempt, path)
);
CREATE INDEX outputs_digest ON outputs (digest);

-- The blobs a job brings (inputs, code bundle): retention keeps them while the job is kept.
CREATE TABLE job_inputs (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    digest text NOT NULL,
    PRIMARY KEY (job_id, digest)
);
CREATE INDEX job_inputs_digest ON job_inputs (digest);

CREATE TABLE nodes (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    labels       text NOT NULL DEFAULT '{}',
    capacity     text NOT NULL,
    state        text NOT NULL DEFAULT 'active',
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    sandbox      text,
    public_key   text,
    detected     text,
    operator     text,
    warm         text
);

-- API tokens: only a sha256 of the secret is kept.
CREATE TABLE tokens (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    role       text NOT NULL,
    hash       text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    revoked_at double precision
);

-- Each worker key belongs to the node name that first registered it (a restart of that
-- node proves it holds the private key); no other node may register it.
CREATE TABLE worker_keys (
    public_key text PRIMARY KEY,
    node_name  text NOT NULL,
    first_seen double precision NOT NULL
);

-- Who uploaded a blob. An owner sees a blob it uploaded, or one its jobs made or use.
CREATE TABLE blob_owners (
    digest text NOT NULL,
    owner  text NOT NULL,
    PRIMARY KEY (digest, owner)
);

-- Dependencies between jobs, and pipelines (their steps are jobs).
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

-- A node's ('node:' and its worker key or id) or an operator's ('operator:NAME') record.
CREATE TABLE reputation (
    subject     text PRIMARY KEY,
    valid       integer NOT NULL DEFAULT 0,
    invalid     integer NOT NULL DEFAULT 0,
    streak      integer NOT NULL DEFAULT 0,
    lost        integer NOT NULL DEFAULT 0,
    timeouts    integer NOT NULL DEFAULT 0,
    quarantined integer NOT NULL DEFAULT 0,
    updated_at  double precision NOT NULL
);

-- Key-signed requests that changed something, kept for their signed time's window: one
-- sent again (a replay) is refused, on every server.
CREATE TABLE request_nonces (
    signature text PRIMARY KEY,
    at        double precision NOT NULL
);
CREATE INDEX request_nonces_at ON request_nonces (at);

-- The ledger: double entry in micro-USD. A transfer moves `amount` from `debit` to
-- `credit`; balances are kept beside, and `sandrun ledger check` proves they agree.
CREATE TABLE accounts (
    id         text PRIMARY KEY,
    balance    bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL
);
CREATE TABLE transfers (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     double precision NOT NULL,
    debit  text NOT NULL,
    credit text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    kind   text NOT NULL,
    job_id text,
    memo   text
);
CREATE INDEX transfers_job ON transfers (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX transfers_debit ON transfers (debit, id);
CREATE INDEX transfers_credit ON transfers (credit, id);
-- Transfers are never changed nor removed: a mistake is corrected by another transfer.
CREATE FUNCTION sandrun_transfers_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'ledger transfers are immutable'; END $$;
CREATE TRIGGER transfers_no_change BEFORE UPDATE OR DELETE ON transfers FOR EACH ROW EXECUTE FUNCTION sandrun_transfers_immutable();

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

-- The server's own identity (one row).
CREATE TABLE server_identity (
    id          integer PRIMARY KEY CHECK (id = 1),
    private_key text NOT NULL,
    created_at  double precision NOT NULL
);

-- What jobs saved when they exited 85 (one per attempt; the last `checkpoint.keep` kept).
CREATE TABLE checkpoints (
    job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    digest     text NOT NULL,
    size       bigint NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX checkpoints_digest ON checkpoints (digest);
