-- The current schema, as the migrations build it (a test checks they agree).
-- Times are seconds since the Unix epoch, UTC.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    owner            TEXT NOT NULL,
    state            TEXT NOT NULL,
    spec             TEXT NOT NULL,
    labels           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    cpus             REAL NOT NULL,
    memory_mb        INTEGER NOT NULL,
    gpu_count        INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    retries_used     INTEGER NOT NULL DEFAULT 0,
    infra_retries    INTEGER NOT NULL DEFAULT 0,
    not_before       REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    exit_code        INTEGER,
    failure_reason   TEXT,
    message          TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    finished_at      REAL,
    gpu_type         TEXT,
    gpu_memory_gb    REAL NOT NULL DEFAULT 0,
    requires         TEXT NOT NULL DEFAULT '{}',
    reserved_node    TEXT,
    reserved_at      REAL,
    pipeline_id      TEXT,
    step             TEXT,
    item             INTEGER,
    items            INTEGER,
    deps_left        INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    cache_key        TEXT,
    waited_on        INTEGER NOT NULL DEFAULT 0,
    cached_from      TEXT,
    replica_of       TEXT,
    replica          INTEGER,
    replicas         INTEGER,
    quorum           INTEGER,
    digest           TEXT,
    consensus        TEXT,
    terms            TEXT,
    held             INTEGER NOT NULL DEFAULT 0,
    cost             INTEGER,
    prefer_trusted   INTEGER NOT NULL DEFAULT 0,
    checkpoint       TEXT,
    checkpoint_requested_at REAL,
    preemptions      INTEGER NOT NULL DEFAULT 0,
    preempt_requested_at REAL
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
CREATE INDEX jobs_pipeline ON jobs (pipeline_id, step, item) WHERE pipeline_id IS NOT NULL;
CREATE INDEX jobs_cache ON jobs (owner, cache_key, finished_at)
    WHERE cache_key IS NOT NULL AND state = 'completed';
CREATE INDEX jobs_replicas ON jobs (replica_of) WHERE replica_of IS NOT NULL;
CREATE INDEX jobs_held ON jobs (owner) WHERE held > 0;

CREATE TABLE attempts (
    job_id           TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    state            TEXT NOT NULL,
    node             TEXT NOT NULL,
    token            TEXT NOT NULL,
    lease_expires_at REAL NOT NULL,
    pid              INTEGER,
    pid_started_at   REAL,
    exit_code        INTEGER,
    failure_reason   TEXT,
    message          TEXT,
    wall_seconds     REAL,
    cpu_seconds      REAL,
    max_rss_mb       REAL,
    scheduled_at     REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    git_commit       TEXT,
    worker_id        TEXT,
    signature        TEXT,
    claim_key        TEXT,
    cpus             REAL,
    memory_mb        INTEGER,
    gpus             INTEGER,
    gpu_model        TEXT,
    stdout_sha256    TEXT,
    meter_signature  TEXT,
    PRIMARY KEY (job_id, number)
);
CREATE INDEX attempts_live ON attempts (lease_expires_at) WHERE state IN ('scheduled', 'running');
CREATE INDEX attempts_node ON attempts (node) WHERE state IN ('scheduled', 'running');

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL,
    data    TEXT NOT NULL DEFAULT '{}',
    at      REAL NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE logs (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    data    BLOB NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);

CREATE TABLE outputs (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    path    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (job_id, attempt, path)
);
CREATE INDEX outputs_digest ON outputs (digest);

-- The blobs a job brings (inputs, code bundle): retention keeps them while the job is kept.
CREATE TABLE job_inputs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (job_id, digest)
);
CREATE INDEX job_inputs_digest ON job_inputs (digest);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    labels       TEXT NOT NULL DEFAULT '{}',
    capacity     TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'active',
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    sandbox      TEXT,
    public_key   TEXT,
    detected     TEXT,
    operator     TEXT,
    warm         TEXT
);

-- API tokens: only a sha256 of the secret is kept.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);

-- Each worker key belongs to the node name that first registered it (a restart of that
-- node proves it holds the private key); no other node may register it.
CREATE TABLE worker_keys (
    public_key TEXT PRIMARY KEY,
    node_name  TEXT NOT NULL,
    first_seen REAL NOT NULL
);

-- Who uploaded a blob. An owner sees a blob it uploaded, or one its jobs made or use.
CREATE TABLE blob_owners (
    digest TEXT NOT NULL,
    owner  TEXT NOT NULL,
    PRIMARY KEY (digest, owner)
);

-- Dependencies between jobs, and pipelines (their steps are jobs).
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

-- A node's ('node:' and its worker key or id) or an operator's ('operator:NAME') record.
CREATE TABLE reputation (
    subject     TEXT PRIMARY KEY,
    valid       INTEGER NOT NULL DEFAULT 0,
    invalid     INTEGER NOT NULL DEFAULT 0,
    streak      INTEGER NOT NULL DEFAULT 0,
    lost        INTEGER NOT NULL DEFAULT 0,
    timeouts    INTEGER NOT NULL DEFAULT 0,
    quarantined INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);

-- Key-signed requests that changed something, kept for their signed time's window: one
-- sent again (a replay) is refused, on every server.
CREATE TABLE request_nonces (
    signature TEXT PRIMARY KEY,
    at        REAL NOT NULL
);
CREATE INDEX request_nonces_at ON request_nonces (at);

-- The ledger: double entry in micro-USD. A transfer moves `amount` from `debit` to
-- `credit`; balances are kept beside, and `sandrun ledger check` proves they agree.
CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    balance    INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE transfers (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    debit  TEXT NOT NULL,
    credit TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    kind   TEXT NOT NULL,
    job_id TEXT,
    memo   TEXT
);
CREATE INDEX transfers_job ON transfers (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX transfers_debit ON transfers (debit, id);
CREATE INDEX transfers_credit ON transfers (credit, id);
-- Transfers are never changed nor removed: a mistake is corrected by another transfer.
CREATE TRIGGER transfers_no_update BEFORE UPDATE ON transfers BEGIN SELECT RAISE(ABORT, 'ledger transfers are immutable'); END;
CREATE TRIGGER transfers_no_delete BEFORE DELETE ON transfers BEGIN SELECT RAISE(ABORT, 'ledger transfers are immutable'); END;

CREATE TABLE volumes (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    size_mb    INTEGER NOT NULL,
    shared     INTEGER NOT NULL DEFAULT 0,
    node       TEXT,
    created_at REAL NOT NULL,
    deleted_at REAL
);
CREATE UNIQUE INDEX volumes_name ON volumes (owner, name) WHERE deleted_at IS NULL;
-- Which jobs mount which volumes, and whether they write: two unfinished writers of one
-- volume that is not shared are refused at submit.
CREATE TABLE job_volumes (
    job_id    TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    writes    INTEGER NOT NULL,
    PRIMARY KEY (job_id, volume_id)
);
CREATE INDEX job_volumes_volume ON job_volumes (volume_id);
-- Secrets, sealed with the server's key (AES-GCM, bound to owner and name): the database
-- alone never holds a value.
CREATE TABLE secrets (
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (owner, name)
);

-- Named environments, created ahead: a Python version and requirements (JSON) that an
-- agent builds with uv when a job names the environment.
CREATE TABLE environments (
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, name)
);

-- The server's own identity (one row).
CREATE TABLE server_identity (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    private_key TEXT NOT NULL,
    created_at  REAL NOT NULL
);

-- What jobs saved when they exited 85 (one per attempt; the last `checkpoint.keep` kept).
CREATE TABLE checkpoints (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX checkpoints_digest ON checkpoints (digest);
