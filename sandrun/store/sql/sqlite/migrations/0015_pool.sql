-- 0015: the pool (issue 23): replicas that must agree, reputation, metering and a ledger.
-- A job with `consensus` waits while its replicas (jobs with replica_of) run; `quorum` is
-- the k in force (a spot check raises a `low` job's to 2), `replicas` how many started.
ALTER TABLE jobs ADD COLUMN replica_of TEXT;
ALTER TABLE jobs ADD COLUMN replica INTEGER;
ALTER TABLE jobs ADD COLUMN replicas INTEGER;
ALTER TABLE jobs ADD COLUMN quorum INTEGER;
ALTER TABLE jobs ADD COLUMN digest TEXT;
ALTER TABLE jobs ADD COLUMN consensus TEXT;
-- terms: the prices and rules a job was accepted under (JSON); held: micro-USD it holds
-- in escrow now; cost: micro-USD it paid, once it ended.
ALTER TABLE jobs ADD COLUMN terms TEXT;
ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cost INTEGER;
-- prefer_trusted: a replica of a high-consensus job, which reputable nodes get first.
ALTER TABLE jobs ADD COLUMN prefer_trusted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_replicas ON jobs (replica_of) WHERE replica_of IS NOT NULL;
CREATE INDEX jobs_held ON jobs (owner) WHERE held > 0;

-- What an attempt held, as its agent metered and signed it.
ALTER TABLE attempts ADD COLUMN cpus REAL;
ALTER TABLE attempts ADD COLUMN memory_mb INTEGER;
ALTER TABLE attempts ADD COLUMN gpus INTEGER;
ALTER TABLE attempts ADD COLUMN gpu_model TEXT;
ALTER TABLE attempts ADD COLUMN stdout_sha256 TEXT;
ALTER TABLE attempts ADD COLUMN meter_signature TEXT;

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
