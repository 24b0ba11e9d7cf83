-- 0015: the pool (issue 23): replicas that must agree, reputation, metering and a ledger.
-- A job with `consensus` waits while its replicas (jobs with replica_of) run; `quorum` is
-- the k in force (a spot check raises a `low` job's to 2), `replicas` how many started.
ALTER TABLE jobs ADD COLUMN replica_of text;
ALTER TABLE jobs ADD COLUMN replica integer;
ALTER TABLE jobs ADD COLUMN replicas integer;
ALTER TABLE jobs ADD COLUMN quorum integer;
ALTER TABLE jobs ADD COLUMN digest text;
ALTER TABLE jobs ADD COLUMN consensus text;
-- terms: the prices and rules a job was accepted under (JSON); held: micro-USD it holds
-- in escrow now; cost: micro-USD it paid, once it ended.
ALTER TABLE jobs ADD COLUMN terms text;
ALTER TABLE jobs ADD COLUMN held bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cost bigint;
-- prefer_trusted: a replica of a high-consensus job, which reputable nodes get first.
ALTER TABLE jobs ADD COLUMN prefer_trusted integer NOT NULL DEFAULT 0;
CREATE INDEX jobs_replicas ON jobs (replica_of) WHERE replica_of IS NOT NULL;
CREATE INDEX jobs_held ON jobs (owner) WHERE held > 0;

-- What an attempt held, as its agent metered and signed it.
ALTER TABLE attempts ADD COLUMN cpus double precision;
ALTER TABLE attempts ADD COLUMN memory_mb integer;
ALTER TABLE attempts ADD COLUMN gpus integer;
ALTER TABLE attempts ADD COLUMN gpu_model text;
ALTER TABLE attempts ADD COLUMN stdout_sha256 text;
ALTER TABLE attempts ADD COLUMN meter_signature text;

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
