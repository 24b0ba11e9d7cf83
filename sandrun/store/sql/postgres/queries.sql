-- PostgreSQL's own forms of the queries in ../queries.sql whose SQL differs here (jsonb,
-- row locks, SKIP LOCKED, one-statement claims). Parameters are :name, as everywhere
-- (the loader turns them into psycopg's %(name)s).

-- name: jobs_by_ids
-- The given jobs (a JSON array of ids), as far as they exist.
SELECT * FROM jobs WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb));

-- name: lock_job
-- A replica's parent is locked first: every writer takes a parent before its replicas, so
-- a replica's end (which decides its parent) and the parent's cancel (which stops its
-- replicas) cannot deadlock. The parent's lock runs as an init plan, before the scan.
WITH parent AS MATERIALIZED (
    SELECT id FROM jobs WHERE id = (SELECT replica_of FROM jobs WHERE id = :id) FOR UPDATE)
SELECT * FROM jobs WHERE id = :id AND (SELECT count(*) FROM parent) >= 0 FOR UPDATE;

-- name: list_jobs
SELECT * FROM jobs
WHERE (:state::text IS NULL OR state = :state::text)
  AND (:owner::text IS NULL OR owner = :owner::text)
  AND (:name::text IS NULL OR name = :name::text)
  AND (:label_key::text IS NULL
       OR (labels::jsonb ->> :label_key::text) = :label_value::text)
  AND (:before_created::float8 IS NULL OR created_at < :before_created::float8
       OR (created_at = :before_created::float8 AND id < :before_id::text))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: fragment_fits
-- The fit rule, used by queue_heads and claim_job (see sqlite/queries.sql for what it says;
-- tests/contract/test_fit.py checks it against placement.fits).
cpus <= :cpus AND memory_mb <= :memory_mb AND gpu_count <= :gpus
AND (gpu_count = 0
     OR ((gpu_type IS NULL OR strpos(',' || gpu_type || ',', ',' || :gpu_type || ',') > 0)
         AND gpu_memory_gb <= :gpu_memory_gb))
AND (requires = '{}' OR requires::jsonb <@ (SELECT labels::jsonb FROM nodes WHERE id = :node))

-- name: queue_heads
-- Each owner's first pending job, in claim order, that fits the given room and this node's
-- labels (gpu_type holds one model or a comma-separated list of acceptable ones). A skip
-- scan finds the owners (one probe of jobs_owner_queue each: its whole key in ORDER BY keeps
-- the planner on it, not on jobs_owner, which holds every finished job too), then one probe
-- per owner walks that owner's queue to the first fit (`owner` leads its ORDER BY for the
-- same reason: jobs_queue, in priority order across owners, would be walked past every
-- other owner's jobs).
WITH RECURSIVE owners(owner) AS (
    (SELECT owner FROM jobs WHERE state = 'pending'
     ORDER BY owner, priority DESC, created_at, id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.owner FROM jobs j WHERE j.state = 'pending' AND j.owner > o.owner
            ORDER BY j.owner, j.priority DESC, j.created_at, j.id LIMIT 1)
    FROM owners o WHERE o.owner IS NOT NULL
)
SELECT h.*, (SELECT heartbeat_at FROM nodes WHERE id = h.reserved_node AND state = 'active')
       AS reserver_seen
FROM owners o
CROSS JOIN LATERAL (
    SELECT id, owner, priority, created_at, cpus, memory_mb, gpu_count, reserved_node,
           reserved_at, replica_of
    FROM jobs
    WHERE owner = o.owner AND state = 'pending' AND not_before + 0 <= :now
      AND {fits}
    ORDER BY owner, priority DESC, created_at, id
    LIMIT 1) h
WHERE o.owner IS NOT NULL;

-- name: fragment_new_attempt
-- A claim's last steps, after its `job` CTE: the attempt on :node, and its event.
attempt AS (
    INSERT INTO attempts (job_id, number, state, node, token, lease_expires_at, scheduled_at,
                          claim_key)
    SELECT id, attempts, 'scheduled', :node, :token, :lease_expires_at, :now, :claim_key
    FROM job
), event AS (
    INSERT INTO events (job_id, attempt, kind, message, data, at)
    SELECT id, attempts, 'scheduled', 'attempt ' || attempts || ' on ' || :node, '{}',
           :now
    FROM job
)

-- name: claim_job
-- `owner`'s first pending job that fits (not a replica: see claim_replica), marked scheduled, with its new attempt and event,
-- in one statement (one round trip). Rows another claimer holds are skipped, not waited
-- for. `not_before + 0` and `owner` leading the ORDER BY keep the planner on
-- jobs_owner_queue, in claim order, stopping at the first fit: jobs_eligible would sort
-- every pending job, jobs_queue walk past every other owner's.
WITH job AS (
    UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = :now,
                    reserved_node = NULL, reserved_at = NULL
    WHERE state = 'pending'
      AND id = (SELECT id FROM jobs
                WHERE owner = :owner AND state = 'pending' AND not_before + 0 <= :now
                  AND {fits}
                  AND replica_of IS NULL
                ORDER BY owner, priority DESC, created_at, id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
    RETURNING *
), {new_attempt}
SELECT * FROM job;

-- name: claim_replica
-- claim_job, replicas included where this node's operator may take them: a separate
-- query, since planning the replica rule costs every plain claim a third of a millisecond.
WITH job AS (
    UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = :now,
                    reserved_node = NULL, reserved_at = NULL
    WHERE state = 'pending'
      AND id = (SELECT id FROM jobs
                WHERE owner = :owner AND state = 'pending' AND not_before + 0 <= :now
                  AND {fits}
                  AND {replica}
                ORDER BY owner, priority DESC, created_at, id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
    RETURNING *
), {new_attempt}
SELECT * FROM job;

-- name: claim_reserved
-- The job this node reserved, now that it fits.
WITH job AS (
    UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = :now,
                    reserved_node = NULL, reserved_at = NULL
    WHERE state = 'pending'
      AND id = (SELECT id FROM jobs
                WHERE id = :job AND state = 'pending'
                FOR UPDATE SKIP LOCKED)
    RETURNING *
), {new_attempt}
SELECT * FROM job;

-- name: running_load
-- What each of the given owners (a JSON array) holds now: jobs, CPUs, memory, GPUs.
SELECT owner, count(*) AS jobs, sum(cpus) AS cpus, sum(memory_mb) AS memory_mb,
       sum(gpu_count) AS gpus
FROM jobs
WHERE state IN ('scheduled', 'running', 'paused')
  AND owner IN (SELECT jsonb_array_elements_text(:owners::jsonb))
GROUP BY owner;

-- name: pool_capacity
-- Everything the live nodes have, the denominator of each owner's share.
SELECT coalesce(sum((capacity::jsonb ->> 'cpus')::float8), 0) AS cpus,
       coalesce(sum((capacity::jsonb ->> 'memory_mb')::float8), 0) AS memory_mb,
       coalesce(sum((capacity::jsonb ->> 'gpus')::float8), 0) AS gpus
FROM nodes WHERE state = 'active' AND heartbeat_at >= :live_since;

-- name: lock_owner
-- One claim at a time per limited owner (held until commit), so its limit is counted
-- exactly; a claim that finds it taken skips the owner rather than wait (no deadlocks).
SELECT pg_try_advisory_xact_lock(hashtext('sandrun.owner:' || :owner)) AS locked;

-- name: lock_expired_attempts
-- Jobs another server's reaper or an agent's report holds are skipped: the next pass
-- sees them again if they are still expired.
SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state IN ('scheduled', 'running') AND a.lease_expires_at < :now
ORDER BY a.job_id
FOR UPDATE OF j SKIP LOCKED;

-- name: lock_node_attempts
SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state IN ('scheduled', 'running') AND a.node = :node
ORDER BY a.job_id
FOR UPDATE OF j;

-- name: read_logs
SELECT attempt, seq, stream, data, at FROM logs
WHERE job_id = :job_id AND (:attempt::int IS NULL OR attempt = :attempt::int)
  AND (attempt > :after_attempt OR (attempt = :after_attempt AND seq > :after_seq))
ORDER BY attempt, seq
LIMIT :limit;

-- name: list_outputs
SELECT attempt, path, digest, size FROM outputs
WHERE job_id = :job_id AND (:attempt::int IS NULL OR attempt = :attempt::int)
ORDER BY attempt, path;

-- name: extend_live_leases
UPDATE attempts SET lease_expires_at = greatest(lease_expires_at, :until)
WHERE state IN ('scheduled', 'running');

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);

-- name: lock_migrations
-- Serializes schema changes between processes until the transaction ends (an arbitrary,
-- fixed 64-bit key).
SELECT pg_advisory_xact_lock(6506947562954555393);

-- name: nodes_heartbeat
-- Many nodes' heartbeats at once (a JSON array of ids): one statement per flush.
UPDATE nodes SET heartbeat_at = :now, state = :state
WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb));

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
  AND a.node IN (SELECT jsonb_array_elements_text(:ids::jsonb));

-- name: lock_pipeline
SELECT * FROM pipelines WHERE id = :id FOR UPDATE;

-- name: lock_volume
-- Two submits that would both write a volume take this lock in turn.
SELECT * FROM volumes WHERE id = :id FOR UPDATE;
