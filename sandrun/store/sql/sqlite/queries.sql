-- SQLite's own forms of the queries in ../queries.sql whose SQL differs here (JSON, no row
-- locks, several statements in one block). Parameters are :name.

-- name: jobs_by_ids
-- The given jobs (a JSON array of ids), as far as they exist.
SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: lock_job
-- Row locks are PostgreSQL's; here the write transaction already excludes other writers.
SELECT * FROM jobs WHERE id = :id;

-- name: list_jobs
SELECT * FROM jobs
WHERE (:state IS NULL OR state = :state)
  AND (:owner IS NULL OR owner = :owner)
  AND (:name IS NULL OR name = :name)
  AND (:label_key IS NULL OR EXISTS (
        SELECT 1 FROM json_each(jobs.labels) WHERE key = :label_key AND value = :label_value))
  AND (:before_created IS NULL OR created_at < :before_created
       OR (created_at = :before_created AND id < :before_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: fragment_fits
-- The fit rule, used by queue_heads and claim_job: the job needs no more than the room
-- (:cpus, :memory_mb, :gpus); a GPU job accepts the node's model (gpu_type: one model or a
-- comma-separated list; NULL: any) and needs no more memory per GPU than it has; every
-- label the job requires has that value on the node. placement.fits states the same
-- rule in Python; tests/contract/test_fit.py checks that the three agree.
cpus <= :cpus AND memory_mb <= :memory_mb AND gpu_count <= :gpus
AND (gpu_count = 0
     OR ((gpu_type IS NULL OR instr(',' || gpu_type || ',', ',' || :gpu_type || ',') > 0)
         AND gpu_memory_gb <= :gpu_memory_gb))
AND (requires = '{}' OR NOT EXISTS (
      SELECT 1 FROM json_each(requires) r
      WHERE json_extract((SELECT labels FROM nodes WHERE id = :node),
                         '$."' || r.key || '"') IS NOT r.value))

-- name: queue_heads
-- Each owner's first pending job, in claim order, that fits the given room and this node's
-- labels (gpu_type holds one model or a comma-separated list of acceptable ones). A skip
-- scan finds the owners (one probe of jobs_owner_queue each), then one probe per owner
-- walks that owner's queue to the first fit.
WITH RECURSIVE owners(owner) AS (
    SELECT min(owner) FROM jobs INDEXED BY jobs_owner_queue WHERE state = 'pending'
    UNION ALL
    SELECT (SELECT min(j.owner) FROM jobs j INDEXED BY jobs_owner_queue
            WHERE j.state = 'pending' AND j.owner > o.owner)
    FROM owners o WHERE o.owner IS NOT NULL
), heads(id) AS (
    SELECT (SELECT id FROM jobs INDEXED BY jobs_owner_queue
            WHERE owner = o.owner AND state = 'pending' AND not_before <= :now
              AND {fits}
            ORDER BY priority DESC, created_at, id
            LIMIT 1)
    FROM owners o WHERE o.owner IS NOT NULL
)
SELECT j.id, j.owner, j.priority, j.created_at, j.cpus, j.memory_mb, j.gpu_count,
       j.reserved_node, j.reserved_at, j.replica_of, n.heartbeat_at AS reserver_seen
FROM heads h JOIN jobs j ON j.id = h.id LEFT JOIN nodes n ON n.id = j.reserved_node AND n.state = 'active';

-- name: fragment_new_attempt
-- A claim's last steps, after its UPDATE ... RETURNING (whose row gives :id, :attempts):
-- the attempt on :node, and its event.
INSERT INTO attempts (job_id, number, state, node, token, lease_expires_at, scheduled_at,
                      claim_key)
VALUES (:id, :attempts, 'scheduled', :node, :token, :lease_expires_at, :now, :claim_key);
INSERT INTO events (job_id, attempt, kind, message, data, at)
VALUES (:id, :attempts, 'scheduled', 'attempt ' || :attempts || ' on ' || :node, '{}', :now);

-- name: claim_job
-- `owner`'s first pending job that fits (not a replica: see claim_replica), marked scheduled, with its new attempt and event.
-- SQLite has one writer at a time (BEGIN IMMEDIATE), so no row lock is needed. INDEXED BY
-- keeps the claim on jobs_owner_queue, in claim order, stopping at the first fit: left to
-- itself the planner may sort every pending job. The statements after the first see its
-- returned row as parameters (:id, :attempts).
UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = :now,
                reserved_node = NULL, reserved_at = NULL
WHERE id = (SELECT id FROM jobs INDEXED BY jobs_owner_queue
            WHERE owner = :owner AND state = 'pending' AND not_before <= :now
              AND {fits}
              AND replica_of IS NULL
            ORDER BY priority DESC, created_at, id
            LIMIT 1)
RETURNING *;
{new_attempt}

-- name: claim_replica
-- claim_job, replicas included where this node's operator may take them (see postgres/).
UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = :now,
                reserved_node = NULL, reserved_at = NULL
WHERE id = (SELECT id FROM jobs INDEXED BY jobs_owner_queue
            WHERE owner = :owner AND state = 'pending' AND not_before <= :now
              AND {fits}
              AND {replica}
            ORDER BY priority DESC, created_at, id
            LIMIT 1)
RETURNING *;
{new_attempt}

-- name: claim_reserved
-- The job this node reserved, now that it fits.
UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = :now,
                reserved_node = NULL, reserved_at = NULL
WHERE id = :job AND state = 'pending'
RETURNING *;
{new_attempt}

-- name: running_load
-- What each of the given owners (a JSON array) holds now: jobs, CPUs, memory, GPUs.
SELECT owner, count(*) AS jobs, sum(cpus) AS cpus, sum(memory_mb) AS memory_mb,
       sum(gpu_count) AS gpus
FROM jobs INDEXED BY jobs_active
WHERE state IN ('scheduled', 'running', 'paused')
  AND owner IN (SELECT value FROM json_each(:owners))
GROUP BY owner;

-- name: pool_capacity
-- Everything the live nodes have, the denominator of each owner's share.
SELECT coalesce(sum(json_extract(capacity, '$.cpus')), 0) AS cpus,
       coalesce(sum(json_extract(capacity, '$.memory_mb')), 0) AS memory_mb,
       coalesce(sum(json_extract(capacity, '$.gpus')), 0) AS gpus
FROM nodes WHERE state = 'active' AND heartbeat_at >= :live_since;

-- name: lock_owner
-- One writer at a time already: nothing more to lock (PostgreSQL takes an advisory lock).
SELECT 1 AS locked WHERE :owner IS NOT NULL;

-- name: lock_expired_attempts
SELECT * FROM attempts
WHERE state IN ('scheduled', 'running') AND lease_expires_at < :now;

-- name: lock_node_attempts
SELECT * FROM attempts
WHERE state IN ('scheduled', 'running') AND node = :node;

-- name: read_logs
SELECT attempt, seq, stream, data, at FROM logs
WHERE job_id = :job_id AND (:attempt IS NULL OR attempt = :attempt)
  AND (attempt > :after_attempt OR (attempt = :after_attempt AND seq > :after_seq))
ORDER BY attempt, seq
LIMIT :limit;

-- name: list_outputs
SELECT attempt, path, digest, size FROM outputs
WHERE job_id = :job_id AND (:attempt IS NULL OR attempt = :attempt)
ORDER BY attempt, path;

-- name: extend_live_leases
UPDATE attempts SET lease_expires_at = max(lease_expires_at, :until)
WHERE state IN ('scheduled', 'running');

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

-- name: lock_migrations
-- Nothing to take: a write transaction (BEGIN IMMEDIATE) already excludes other writers.
SELECT 1;

-- name: nodes_heartbeat
-- Many nodes' heartbeats at once (a JSON array of ids): one statement per flush.
UPDATE nodes SET heartbeat_at = :now, state = :state
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: nodes_live_attempts
-- The live attempts of the given nodes (a JSON array of ids), with their job's cancel flag,
-- state (paused: to be kept frozen), and the checkpoint and preemption asked of it as it ran.
SELECT a.node, a.job_id, a.number, a.state, j.cancel_requested, j.state AS job_state,
       CASE WHEN j.checkpoint_requested_at > a.started_at
            THEN j.checkpoint_requested_at END AS checkpoint_requested_at,
       CASE WHEN j.preempt_requested_at > a.started_at
            THEN j.preempt_requested_at END AS preempt_requested_at
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state IN ('scheduled', 'running')
  AND a.node IN (SELECT value FROM json_each(:ids));

-- name: lock_pipeline
-- Row locks are PostgreSQL's; here the write transaction already excludes other writers.
SELECT * FROM pipelines WHERE id = :id;

-- name: lock_volume
SELECT * FROM volumes WHERE id = :id;
