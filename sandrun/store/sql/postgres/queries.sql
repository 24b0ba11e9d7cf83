-- Named queries for the PostgreSQL store. Parameters are %(name)s (psycopg); each block
-- starts "-- name: X". Every change to a job first locks its row (lock_job, claim_job's
-- SKIP LOCKED, the reaper's FOR UPDATE OF j), so concurrent servers serialize per job,
-- always job row before attempt rows.

-- name: insert_job
INSERT INTO jobs (id, name, owner, state, spec, labels, priority, cpus, memory_mb, gpu_count,
                  gpu_type, gpu_memory_gb, requires, not_before, created_at, updated_at)
VALUES (%(id)s, %(name)s, %(owner)s, %(state)s, %(spec)s, %(labels)s, %(priority)s, %(cpus)s,
        %(memory_mb)s, %(gpu_count)s, %(gpu_type)s, %(gpu_memory_gb)s, %(requires)s,
        %(not_before)s,
        %(created_at)s, %(created_at)s);

-- name: insert_event
INSERT INTO events (job_id, attempt, kind, message, data, at)
VALUES (%(job_id)s, %(attempt)s, %(kind)s, %(message)s, %(data)s, %(at)s);

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s;

-- name: jobs_by_ids
-- The given jobs (a JSON array of ids), as far as they exist.
SELECT * FROM jobs WHERE id IN (SELECT jsonb_array_elements_text(%(ids)s::jsonb));

-- name: lock_job
SELECT * FROM jobs WHERE id = %(id)s FOR UPDATE;

-- name: list_jobs
SELECT * FROM jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
  AND (%(name)s::text IS NULL OR name = %(name)s::text)
  AND (%(label_key)s::text IS NULL
       OR (labels::jsonb ->> %(label_key)s::text) = %(label_value)s::text)
  AND (%(before_created)s::float8 IS NULL OR created_at < %(before_created)s::float8
       OR (created_at = %(before_created)s::float8 AND id < %(before_id)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: set_job_state
UPDATE jobs SET state = %(state)s, exit_code = %(exit_code)s,
                failure_reason = %(failure_reason)s, message = %(message)s,
                updated_at = %(now)s, finished_at = %(finished_at)s,
                not_before = %(not_before)s, retries_used = %(retries_used)s,
                infra_retries = %(infra_retries)s
WHERE id = %(id)s
RETURNING *;

-- name: request_cancel
UPDATE jobs SET cancel_requested = 1, updated_at = %(now)s WHERE id = %(id)s;

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
           reserved_at
    FROM jobs
    WHERE owner = o.owner AND state = 'pending' AND not_before + 0 <= %(now)s
      AND cpus <= %(cpus)s AND memory_mb <= %(memory_mb)s AND gpu_count <= %(gpus)s
      AND (gpu_count = 0
           OR ((gpu_type IS NULL
                OR strpos(',' || gpu_type || ',', ',' || %(gpu_type)s || ',') > 0)
               AND gpu_memory_gb <= %(gpu_memory_gb)s))
      AND (requires = '{}' OR requires::jsonb
           <@ (SELECT labels::jsonb FROM nodes WHERE id = %(node)s))
    ORDER BY owner, priority DESC, created_at, id
    LIMIT 1) h
WHERE o.owner IS NOT NULL;

-- name: claim_job
-- `owner`'s first pending job that fits, marked scheduled, with its new attempt and event,
-- in one statement (one round trip). Rows another claimer holds are skipped, not waited
-- for. `not_before + 0` and `owner` leading the ORDER BY keep the planner on
-- jobs_owner_queue, in claim order, stopping at the first fit: jobs_eligible would sort
-- every pending job, jobs_queue walk past every other owner's.
WITH job AS (
    UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = %(now)s,
                    reserved_node = NULL, reserved_at = NULL
    WHERE state = 'pending'
      AND id = (SELECT id FROM jobs
                WHERE owner = %(owner)s AND state = 'pending' AND not_before + 0 <= %(now)s
                  AND cpus <= %(cpus)s AND memory_mb <= %(memory_mb)s AND gpu_count <= %(gpus)s
                  AND (gpu_count = 0
                       OR ((gpu_type IS NULL
                            OR strpos(',' || gpu_type || ',', ',' || %(gpu_type)s || ',') > 0)
                           AND gpu_memory_gb <= %(gpu_memory_gb)s))
                  AND (requires = '{}' OR requires::jsonb
                       <@ (SELECT labels::jsonb FROM nodes WHERE id = %(node)s))
                ORDER BY owner, priority DESC, created_at, id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
    RETURNING *
), attempt AS (
    INSERT INTO attempts (job_id, number, state, node, token, lease_expires_at, scheduled_at)
    SELECT id, attempts, 'scheduled', %(node)s, %(token)s, %(lease_expires_at)s, %(now)s
    FROM job
), event AS (
    INSERT INTO events (job_id, attempt, kind, message, data, at)
    SELECT id, attempts, 'scheduled', 'attempt ' || attempts || ' on ' || %(node)s, '{}',
           %(now)s
    FROM job
)
SELECT * FROM job;

-- name: claim_reserved
-- The job this node reserved, now that it fits.
WITH job AS (
    UPDATE jobs SET state = 'scheduled', attempts = attempts + 1, updated_at = %(now)s,
                    reserved_node = NULL, reserved_at = NULL
    WHERE state = 'pending'
      AND id = (SELECT id FROM jobs
                WHERE id = %(job)s AND state = 'pending'
                FOR UPDATE SKIP LOCKED)
    RETURNING *
), attempt AS (
    INSERT INTO attempts (job_id, number, state, node, token, lease_expires_at, scheduled_at)
    SELECT id, attempts, 'scheduled', %(node)s, %(token)s, %(lease_expires_at)s, %(now)s
    FROM job
), event AS (
    INSERT INTO events (job_id, attempt, kind, message, data, at)
    SELECT id, attempts, 'scheduled', 'attempt ' || attempts || ' on ' || %(node)s, '{}',
           %(now)s
    FROM job
)
SELECT * FROM job;

-- name: reservation
SELECT id, owner, priority, created_at, cpus, memory_mb, gpu_count, reserved_node,
       reserved_at
FROM jobs
WHERE reserved_node = %(node)s AND state = 'pending'
ORDER BY reserved_at
LIMIT 1;

-- name: reserve_job
-- Unless a live, active node (heard from since live_since, not draining) already keeps
-- itself for the job.
UPDATE jobs SET reserved_node = %(node)s, reserved_at = %(now)s
WHERE id = %(job)s AND state = 'pending'
  AND (reserved_node IS NULL OR reserved_node = %(node)s
       OR NOT EXISTS (SELECT 1 FROM nodes
                      WHERE id = jobs.reserved_node AND heartbeat_at >= %(live_since)s
                        AND state = 'active'));

-- name: job_reservation
SELECT reserved_node FROM jobs WHERE id = %(id)s AND state = 'pending';

-- name: release_reservation
UPDATE jobs SET reserved_node = NULL, reserved_at = NULL WHERE id = %(job)s;

-- name: backfilled
-- What this node started since it reserved a job: all of it must fit beside that job.
SELECT coalesce(sum(j.cpus), 0) AS cpus, coalesce(sum(j.memory_mb), 0) AS memory_mb,
       coalesce(sum(j.gpu_count), 0) AS gpus
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.node = %(node)s AND a.state IN ('scheduled', 'running') AND a.scheduled_at >= %(since)s;

-- name: running_load
-- What each of the given owners (a JSON array) holds now: jobs, CPUs, memory, GPUs.
SELECT owner, count(*) AS jobs, sum(cpus) AS cpus, sum(memory_mb) AS memory_mb,
       sum(gpu_count) AS gpus
FROM jobs
WHERE state IN ('scheduled', 'running')
  AND owner IN (SELECT jsonb_array_elements_text(%(owners)s::jsonb))
GROUP BY owner;

-- name: pool_capacity
-- Everything the live nodes have, the denominator of each owner's share.
SELECT coalesce(sum((capacity::jsonb ->> 'cpus')::float8), 0) AS cpus,
       coalesce(sum((capacity::jsonb ->> 'memory_mb')::float8), 0) AS memory_mb,
       coalesce(sum((capacity::jsonb ->> 'gpus')::float8), 0) AS gpus
FROM nodes WHERE state = 'active' AND heartbeat_at >= %(live_since)s;

-- name: node_capacity
SELECT capacity FROM nodes WHERE id = %(node)s;

-- name: lock_owner
-- One claim at a time per limited owner (held until commit), so its limit is counted
-- exactly; a claim that finds it taken skips the owner rather than wait (no deadlocks).
SELECT pg_try_advisory_xact_lock(hashtext('sandrun.owner:' || %(owner)s)) AS locked;

-- name: next_not_before
SELECT min(not_before) AS at FROM jobs WHERE state = 'pending';

-- name: get_attempt
SELECT * FROM attempts WHERE job_id = %(job_id)s AND number = %(number)s;

-- name: list_attempts
SELECT * FROM attempts WHERE job_id = %(job_id)s ORDER BY number;

-- name: start_attempt
UPDATE attempts SET state = 'running', started_at = %(now)s, pid = %(pid)s,
                    pid_started_at = %(pid_started_at)s, git_commit = %(git_commit)s
WHERE job_id = %(job_id)s AND number = %(number)s;

-- name: mark_running
UPDATE jobs SET state = 'running', updated_at = %(now)s WHERE id = %(id)s;

-- name: renew_lease
UPDATE attempts SET lease_expires_at = %(lease_expires_at)s
WHERE job_id = %(job_id)s AND number = %(number)s AND token = %(token)s
  AND state IN ('scheduled', 'running');

-- name: finish_attempt
UPDATE attempts SET state = %(state)s, exit_code = %(exit_code)s,
                    failure_reason = %(failure_reason)s, message = %(message)s,
                    wall_seconds = %(wall_seconds)s, cpu_seconds = %(cpu_seconds)s,
                    max_rss_mb = %(max_rss_mb)s, finished_at = %(now)s,
                    worker_id = %(worker_id)s, signature = %(signature)s
WHERE job_id = %(job_id)s AND number = %(number)s;

-- name: node_attempts
SELECT * FROM attempts
WHERE state IN ('scheduled', 'running') AND node = %(node)s;

-- name: lock_expired_attempts
-- Jobs another server's reaper or an agent's report holds are skipped: the next pass
-- sees them again if they are still expired.
SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state IN ('scheduled', 'running') AND a.lease_expires_at < %(now)s
ORDER BY a.job_id
FOR UPDATE OF j SKIP LOCKED;

-- name: lock_node_attempts
SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state IN ('scheduled', 'running') AND a.node = %(node)s
ORDER BY a.job_id
FOR UPDATE OF j;

-- name: insert_log
INSERT INTO logs (job_id, attempt, seq, stream, data, at)
VALUES (%(job_id)s, %(attempt)s, %(seq)s, %(stream)s, %(data)s, %(at)s)
ON CONFLICT (job_id, attempt, seq) DO NOTHING;

-- name: read_logs
SELECT attempt, seq, stream, data, at FROM logs
WHERE job_id = %(job_id)s AND (%(attempt)s::int IS NULL OR attempt = %(attempt)s::int)
  AND (attempt > %(after_attempt)s OR (attempt = %(after_attempt)s AND seq > %(after_seq)s))
ORDER BY attempt, seq
LIMIT %(limit)s;

-- name: insert_output
INSERT INTO outputs (job_id, attempt, path, digest, size)
VALUES (%(job_id)s, %(attempt)s, %(path)s, %(digest)s, %(size)s)
ON CONFLICT (job_id, attempt, path) DO NOTHING;

-- name: list_outputs
SELECT attempt, path, digest, size FROM outputs
WHERE job_id = %(job_id)s AND (%(attempt)s::int IS NULL OR attempt = %(attempt)s::int)
ORDER BY attempt, path;

-- name: read_events
SELECT * FROM events WHERE job_id = %(job_id)s AND id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: cancel_requested
SELECT a.job_id, a.number FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.node = %(node)s AND a.state IN ('scheduled', 'running') AND j.cancel_requested = 1;

-- name: upsert_node
INSERT INTO nodes (id, name, labels, capacity, state, started_at, heartbeat_at, sandbox,
                   public_key, detected)
VALUES (%(id)s, %(name)s, %(labels)s, %(capacity)s, 'active', %(now)s, %(now)s, %(sandbox)s,
        %(public_key)s, %(detected)s)
ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity,
    sandbox = excluded.sandbox, public_key = excluded.public_key,
    detected = excluded.detected,
    state = 'active', started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at;

-- name: node_heartbeat
UPDATE nodes SET heartbeat_at = %(now)s, state = %(state)s WHERE id = %(id)s;

-- name: signer_key
SELECT n.public_key FROM attempts a JOIN nodes n ON n.id = a.node
WHERE a.job_id = %(job_id)s AND a.number = %(number)s;

-- name: node_heartbeat_at
SELECT heartbeat_at FROM nodes WHERE id = %(id)s;

-- name: list_nodes
-- Each node with what its live attempts hold (count, CPUs, memory, GPUs).
SELECT n.*, k.first_seen AS key_first_seen, coalesce(u.running, 0) AS running,
       coalesce(u.cpus, 0) AS used_cpus,
       coalesce(u.memory_mb, 0) AS used_memory_mb, coalesce(u.gpus, 0) AS used_gpus
FROM nodes n
LEFT JOIN (SELECT a.node, count(*) AS running, sum(j.cpus) AS cpus,
                  sum(j.memory_mb) AS memory_mb, sum(j.gpu_count) AS gpus
           FROM attempts a JOIN jobs j ON j.id = a.job_id
           WHERE a.state IN ('scheduled', 'running')
           GROUP BY a.node) u ON u.node = n.id
LEFT JOIN worker_keys k ON k.public_key = n.public_key
ORDER BY n.name, n.id;

-- name: extend_live_leases
UPDATE attempts SET lease_expires_at = greatest(lease_expires_at, %(until)s)
WHERE state IN ('scheduled', 'running');

-- name: insert_token
INSERT INTO tokens (id, name, role, hash, created_at)
VALUES (%(id)s, %(name)s, %(role)s, %(hash)s, %(now)s);

-- name: token_by_hash
SELECT name, role FROM tokens WHERE hash = %(hash)s AND revoked_at IS NULL;

-- name: list_tokens
SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY created_at, id;

-- name: revoke_tokens
-- By id or by name (all of that name's tokens); revoking twice changes nothing.
UPDATE tokens SET revoked_at = %(now)s
WHERE (id = %(key)s OR name = %(key)s) AND revoked_at IS NULL;

-- name: worker_key
SELECT node_name, first_seen FROM worker_keys WHERE public_key = %(public_key)s;

-- name: insert_worker_key
INSERT INTO worker_keys (public_key, node_name, first_seen)
VALUES (%(public_key)s, %(node_name)s, %(now)s)
ON CONFLICT (public_key) DO NOTHING;

-- name: insert_blob_owner
INSERT INTO blob_owners (digest, owner) VALUES (%(digest)s, %(owner)s)
ON CONFLICT (digest, owner) DO NOTHING;

-- name: blob_visible
-- An owner sees a blob it uploaded, or one its jobs produced or use.
SELECT 1 AS found FROM blob_owners WHERE digest = %(digest)s AND owner = %(owner)s
UNION ALL
SELECT 1 AS found FROM outputs o JOIN jobs j ON j.id = o.job_id
WHERE o.digest = %(digest)s AND j.owner = %(owner)s
UNION ALL
SELECT 1 AS found FROM job_inputs i JOIN jobs j ON j.id = i.job_id
WHERE i.digest = %(digest)s AND j.owner = %(owner)s
LIMIT 1;

-- name: delete_blob_owners
DELETE FROM blob_owners WHERE digest = %(digest)s;

-- name: logged_jobs_before
-- Retention: terminal jobs finished before the cutoff that still have logs, oldest first.
SELECT id, finished_at FROM jobs j
WHERE finished_at < %(cutoff)s AND state IN ('completed', 'failed', 'cancelled')
  AND (finished_at > %(after_at)s OR (finished_at = %(after_at)s AND id > %(after_id)s))
  AND EXISTS (SELECT 1 FROM logs l WHERE l.job_id = j.id)
ORDER BY finished_at, id
LIMIT %(limit)s;

-- name: terminal_jobs_before
SELECT id, finished_at FROM jobs
WHERE finished_at < %(cutoff)s AND state IN ('completed', 'failed', 'cancelled')
ORDER BY finished_at, id
LIMIT %(limit)s;

-- name: delete_logs
DELETE FROM logs WHERE job_id = %(job_id)s;

-- name: delete_job
DELETE FROM jobs WHERE id = %(id)s;

-- name: delete_stale_nodes
-- Agents not heard from since the cutoff, with nothing left running on them.
DELETE FROM nodes
WHERE id IN (SELECT id FROM nodes n
             WHERE n.heartbeat_at < %(cutoff)s
               AND NOT EXISTS (SELECT 1 FROM attempts a
                               WHERE a.node = n.id AND a.state IN ('scheduled', 'running'))
             LIMIT %(limit)s);

-- name: digest_referenced
SELECT 1 AS found FROM outputs WHERE digest = %(digest)s
UNION ALL
SELECT 1 AS found FROM job_inputs WHERE digest = %(digest)s
LIMIT 1;

-- name: insert_job_input
INSERT INTO job_inputs (job_id, digest) VALUES (%(job_id)s, %(digest)s)
ON CONFLICT (job_id, digest) DO NOTHING;

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);

-- name: schema_version
SELECT max(version) AS version FROM schema_version;

-- name: set_schema_version
INSERT INTO schema_version (version) VALUES (%(version)s);

-- name: queue_position
SELECT count(*) AS ahead FROM jobs
WHERE state = 'pending'
  AND (priority > %(priority)s OR (priority = %(priority)s AND created_at < %(created_at)s));

-- name: owner_usage
SELECT
  (SELECT count(*) FROM jobs
   WHERE owner = %(owner)s AND state IN ('pending', 'scheduled', 'running')) AS active,
  (SELECT count(*) FROM jobs WHERE owner = %(owner)s AND created_at >= %(hour_ago)s) AS last_hour,
  (SELECT coalesce(sum(a.cpu_seconds), 0) FROM attempts a JOIN jobs j ON j.id = a.job_id
   WHERE j.owner = %(owner)s AND a.finished_at >= %(minute_ago)s) AS cpu_last_minute;

-- name: queue_length
SELECT
  (SELECT count(*) FROM jobs WHERE state IN ('pending', 'scheduled')) AS queued,
  (SELECT count(*) FROM jobs WHERE state = 'running') AS running;
