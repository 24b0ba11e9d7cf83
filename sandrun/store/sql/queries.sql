-- Named queries, the same in both dialects. Parameters are :name; each block starts
-- "-- name: X". A dialect's own file (sql/<dialect>/queries.sql) holds only the queries
-- whose SQL really differs there, and may use fragments ({fits}: see those files).
-- In SQLite a block of several statements runs them in order; the later ones also get the
-- columns of the row the first returned as parameters.

-- name: insert_job
INSERT INTO jobs (id, name, owner, state, spec, labels, priority, cpus, memory_mb, gpu_count,
                  gpu_type, gpu_memory_gb, requires, not_before, created_at, updated_at)
VALUES (:id, :name, :owner, :state, :spec, :labels, :priority, :cpus, :memory_mb, :gpu_count,
        :gpu_type, :gpu_memory_gb, :requires, :not_before, :created_at, :created_at);

-- name: insert_event
INSERT INTO events (job_id, attempt, kind, message, data, at)
VALUES (:job_id, :attempt, :kind, :message, :data, :at);

-- name: get_job
SELECT * FROM jobs WHERE id = :id;

-- name: set_job_state
UPDATE jobs SET state = :state, exit_code = :exit_code, failure_reason = :failure_reason,
                message = :message, updated_at = :now, finished_at = :finished_at,
                not_before = :not_before, retries_used = :retries_used,
                infra_retries = :infra_retries, result = :result
WHERE id = :id
RETURNING *;

-- name: request_cancel
UPDATE jobs SET cancel_requested = 1, updated_at = :now WHERE id = :id;

-- name: reservation
SELECT id, owner, priority, created_at, cpus, memory_mb, gpu_count, reserved_node,
       reserved_at, replica_of
FROM jobs
WHERE reserved_node = :node AND state = 'pending'
ORDER BY reserved_at
LIMIT 1;

-- name: reserve_job
-- Unless a live, active node (heard from since :live_since, not draining) already keeps
-- itself for the job.
UPDATE jobs SET reserved_node = :node, reserved_at = :now
WHERE id = :job AND state = 'pending'
  AND (reserved_node IS NULL OR reserved_node = :node
       OR NOT EXISTS (SELECT 1 FROM nodes
                      WHERE id = jobs.reserved_node AND heartbeat_at >= :live_since
                        AND state = 'active'));

-- name: job_reservation
SELECT reserved_node FROM jobs WHERE id = :id AND state = 'pending';

-- name: release_reservation
UPDATE jobs SET reserved_node = NULL, reserved_at = NULL WHERE id = :job;

-- name: backfilled
-- What this node started since it reserved a job: all of it must fit beside that job.
SELECT coalesce(sum(j.cpus), 0) AS cpus, coalesce(sum(j.memory_mb), 0) AS memory_mb,
       coalesce(sum(j.gpu_count), 0) AS gpus
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.node = :node AND a.state IN ('scheduled', 'running') AND a.scheduled_at >= :since;

-- name: next_not_before
-- Only instants still to come: a job already eligible that nobody claims is no wake-up.
SELECT min(not_before) AS at FROM jobs WHERE state = 'pending' AND not_before > :now;

-- name: get_attempt
SELECT * FROM attempts WHERE job_id = :job_id AND number = :number;

-- name: list_attempts
SELECT * FROM attempts WHERE job_id = :job_id ORDER BY number;

-- name: start_attempt
UPDATE attempts SET state = 'running', started_at = :now, pid = :pid,
                    pid_started_at = :pid_started_at, git_commit = :git_commit
WHERE job_id = :job_id AND number = :number;

-- name: mark_running
UPDATE jobs SET state = 'running', updated_at = :now WHERE id = :id;

-- name: renew_lease
UPDATE attempts SET lease_expires_at = :lease_expires_at
WHERE job_id = :job_id AND number = :number AND token = :token
  AND state IN ('scheduled', 'running');

-- name: finish_attempt
UPDATE attempts SET state = :state, exit_code = :exit_code, failure_reason = :failure_reason,
                    message = :message, wall_seconds = :wall_seconds,
                    cpu_seconds = :cpu_seconds, max_rss_mb = :max_rss_mb, finished_at = :now,
                    worker_id = :worker_id, signature = :signature, cpus = :cpus,
                    memory_mb = :memory_mb, gpus = :gpus, gpu_model = :gpu_model,
                    stdout_sha256 = :stdout_sha256, meter_signature = :meter_signature
WHERE job_id = :job_id AND number = :number;

-- name: node_attempts
SELECT * FROM attempts
WHERE state IN ('scheduled', 'running') AND node = :node;

-- name: insert_log
INSERT INTO logs (job_id, attempt, seq, stream, data, at)
VALUES (:job_id, :attempt, :seq, :stream, :data, :at)
ON CONFLICT (job_id, attempt, seq) DO NOTHING;

-- name: insert_output
INSERT INTO outputs (job_id, attempt, path, digest, size)
VALUES (:job_id, :attempt, :path, :digest, :size)
ON CONFLICT (job_id, attempt, path) DO NOTHING;

-- name: read_events
SELECT * FROM events WHERE job_id = :job_id AND id > :after ORDER BY id LIMIT :limit;

-- name: upsert_node
INSERT INTO nodes (id, name, labels, capacity, state, started_at, heartbeat_at, sandbox,
                   public_key, detected, operator)
VALUES (:id, :name, :labels, :capacity, 'active', :now, :now, :sandbox,
        :public_key, :detected, :operator)
ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity,
    sandbox = excluded.sandbox, public_key = excluded.public_key,
    detected = excluded.detected, operator = excluded.operator, warm = NULL,
    state = 'active', started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at;

-- name: node_warm
-- A node's warm workers, from a heartbeat that carried them (a JSON report).
UPDATE nodes SET warm = :warm WHERE id = :id;

-- name: signer_key
SELECT n.public_key FROM attempts a JOIN nodes n ON n.id = a.node
WHERE a.job_id = :job_id AND a.number = :number;

-- name: node_heartbeat_at
SELECT heartbeat_at FROM nodes WHERE id = :id;

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

-- name: insert_token
INSERT INTO tokens (id, name, role, hash, created_at)
VALUES (:id, :name, :role, :hash, :now);

-- name: token_by_hash
SELECT name, role FROM tokens WHERE hash = :hash AND revoked_at IS NULL;

-- name: list_tokens
SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY created_at, id;

-- name: revoke_tokens
-- By id or by name (all of that name's tokens); revoking twice changes nothing.
UPDATE tokens SET revoked_at = :now
WHERE (id = :key OR name = :key) AND revoked_at IS NULL;

-- name: worker_key
SELECT node_name, first_seen FROM worker_keys WHERE public_key = :public_key;

-- name: insert_worker_key
INSERT INTO worker_keys (public_key, node_name, first_seen)
VALUES (:public_key, :node_name, :now)
ON CONFLICT (public_key) DO NOTHING;

-- name: insert_blob_owner
INSERT INTO blob_owners (digest, owner) VALUES (:digest, :owner)
ON CONFLICT (digest, owner) DO NOTHING;

-- name: blob_visible
-- An owner sees a blob it uploaded, or one its jobs produced or use.
SELECT 1 AS found FROM blob_owners WHERE digest = :digest AND owner = :owner
UNION ALL
SELECT 1 AS found FROM outputs o JOIN jobs j ON j.id = o.job_id
WHERE o.digest = :digest AND j.owner = :owner
UNION ALL
SELECT 1 AS found FROM job_inputs i JOIN jobs j ON j.id = i.job_id
WHERE i.digest = :digest AND j.owner = :owner
LIMIT 1;

-- name: delete_blob_owners
DELETE FROM blob_owners WHERE digest = :digest;

-- name: logged_jobs_before
-- Retention: terminal jobs finished before :cutoff that still have logs, oldest first.
SELECT id, finished_at FROM jobs j
WHERE finished_at < :cutoff AND state IN ('completed', 'failed', 'cancelled', 'skipped')
  AND (finished_at > :after_at OR (finished_at = :after_at AND id > :after_id))
  AND EXISTS (SELECT 1 FROM logs l WHERE l.job_id = j.id)
ORDER BY finished_at, id
LIMIT :limit;

-- name: terminal_jobs_before
SELECT id, finished_at FROM jobs
WHERE finished_at < :cutoff AND state IN ('completed', 'failed', 'cancelled', 'skipped')
  -- A running pipeline's later steps still read its ended ones.
  AND (pipeline_id IS NULL
       OR pipeline_id IN (SELECT id FROM pipelines WHERE state <> 'running'))
ORDER BY finished_at, id
LIMIT :limit;

-- name: delete_ended_pipelines
-- Runs that ended before the cutoff and whose jobs are all gone.
DELETE FROM pipelines
WHERE id IN (SELECT p.id FROM pipelines p
             WHERE p.finished_at < :cutoff
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.pipeline_id = p.id)
             LIMIT :limit);

-- name: delete_logs
DELETE FROM logs WHERE job_id = :job_id;

-- name: delete_job
DELETE FROM jobs WHERE id = :id;

-- name: delete_stale_nodes
-- Agents not heard from since the cutoff, with nothing left running on them.
DELETE FROM nodes
WHERE id IN (SELECT id FROM nodes n
             WHERE n.heartbeat_at < :cutoff
               AND NOT EXISTS (SELECT 1 FROM attempts a
                               WHERE a.node = n.id AND a.state IN ('scheduled', 'running'))
             LIMIT :limit);

-- name: digest_referenced
SELECT 1 AS found FROM outputs WHERE digest = :digest
UNION ALL
SELECT 1 AS found FROM job_inputs WHERE digest = :digest
UNION ALL
SELECT 1 AS found FROM checkpoints WHERE digest = :digest
LIMIT 1;

-- name: insert_job_input
INSERT INTO job_inputs (job_id, digest) VALUES (:job_id, :digest)
ON CONFLICT (job_id, digest) DO NOTHING;

-- name: schema_version
SELECT max(version) AS version FROM schema_version;

-- name: set_schema_version
INSERT INTO schema_version (version) VALUES (:version);

-- name: queue_position
SELECT count(*) AS ahead FROM jobs
WHERE state = 'pending'
  AND (priority > :priority OR (priority = :priority AND created_at < :created_at));

-- name: owner_usage
SELECT
  (SELECT count(*) FROM jobs
   WHERE owner = :owner AND state IN ('pending', 'scheduled', 'running', 'paused')) AS active,
  (SELECT count(*) FROM jobs WHERE owner = :owner AND created_at >= :hour_ago) AS last_hour,
  (SELECT coalesce(sum(a.cpu_seconds), 0) FROM attempts a JOIN jobs j ON j.id = a.job_id
   WHERE j.owner = :owner AND a.finished_at >= :minute_ago) AS cpu_last_minute;

-- name: queue_length
SELECT
  (SELECT count(*) FROM jobs WHERE state IN ('pending', 'scheduled')) AS queued,
  (SELECT count(*) FROM jobs WHERE state = 'running') AS running;

-- name: renew_claims_with_key
-- Handed again, as a claim is handed: the node holds them from now.
UPDATE attempts SET lease_expires_at = :lease_expires_at
WHERE node = :node AND claim_key = :claim_key AND state = 'scheduled';

-- name: claims_with_key
-- The claims a call with this key already made on :node that are still unstarted.
SELECT job_id, number, token, lease_expires_at FROM attempts
WHERE node = :node AND claim_key = :claim_key AND state = 'scheduled'
ORDER BY scheduled_at, job_id;

-- name: node_identity
SELECT operator, labels FROM nodes WHERE id = :id;

-- --- dependencies and pipelines (store/deps.py, store/steps.py) ---------------------------

-- name: insert_waiting_job
INSERT INTO jobs (id, name, owner, state, spec, labels, priority, cpus, memory_mb, gpu_count,
                  gpu_type, gpu_memory_gb, requires, not_before, created_at, updated_at,
                  pipeline_id, step, item, deps_left)
VALUES (:id, :name, :owner, 'waiting', :spec, :labels, :priority, :cpus, :memory_mb,
        :gpu_count, :gpu_type, :gpu_memory_gb, :requires, :not_before, :created_at,
        :created_at, :pipeline_id, :step, :item, :deps_left);

-- name: insert_dependency
INSERT INTO job_deps (job_id, dep_id, condition) VALUES (:job_id, :dep_id, :condition)
ON CONFLICT (job_id, dep_id) DO NOTHING;

-- name: mark_waited_on
UPDATE jobs SET waited_on = 1 WHERE id = :id AND waited_on = 0;

-- name: dependents
SELECT job_id, condition FROM job_deps WHERE dep_id = :dep_id ORDER BY job_id;

-- name: dependencies
SELECT d.dep_id, d.condition, j.state, j.name FROM job_deps d JOIN jobs j ON j.id = d.dep_id
WHERE d.job_id = :job_id ORDER BY d.dep_id;

-- name: set_deps_left
UPDATE jobs SET deps_left = :deps_left WHERE id = :id;

-- name: dependency_ended
UPDATE jobs SET deps_left = deps_left - 1, updated_at = :now WHERE id = :id
RETURNING deps_left;

-- name: make_step
-- A released step's job as its templates rendered it.
UPDATE jobs SET name = :name, spec = :spec, labels = :labels, priority = :priority,
                cpus = :cpus, memory_mb = :memory_mb, gpu_count = :gpu_count,
                gpu_type = :gpu_type, gpu_memory_gb = :gpu_memory_gb, requires = :requires,
                cache_key = :cache_key, updated_at = :now
WHERE id = :id;

-- name: set_items
UPDATE jobs SET items = :items, deps_left = :items, updated_at = :now WHERE id = :id;

-- name: mark_cached
UPDATE jobs SET cached_from = :source WHERE id = :id;

-- name: retry_source
-- The completed job of the run being retried that ran this step (or item) as this one would.
SELECT * FROM jobs
WHERE pipeline_id = :pipeline_id AND step = :step AND state = 'completed'
  AND cache_key = :cache_key
  AND (item = CAST(:item AS INTEGER) OR (item IS NULL AND CAST(:item AS INTEGER) IS NULL))
ORDER BY finished_at DESC LIMIT 1;

-- name: cache_source
SELECT * FROM jobs
WHERE owner = :owner AND cache_key = :cache_key AND state = 'completed'
  AND finished_at >= :since
ORDER BY finished_at DESC LIMIT 1;

-- name: copy_outputs
-- A cached job's outputs stand as its attempt 1's (it has no attempt row): those of the
-- attempt that completed its source (attempt 1 too, if that was cached).
INSERT INTO outputs (job_id, attempt, path, digest, size)
SELECT :job_id, 1, o.path, o.digest, o.size FROM outputs o JOIN jobs j ON j.id = o.job_id
WHERE o.job_id = :source AND o.attempt = CASE WHEN j.attempts > 0 THEN j.attempts ELSE 1 END;

-- name: output_of
-- A job's output by path, from the attempt that ended it.
SELECT o.digest FROM outputs o JOIN jobs j ON j.id = o.job_id
WHERE o.job_id = :job_id AND o.path = :path
  AND o.attempt = CASE WHEN j.attempts > 0 THEN j.attempts ELSE 1 END;

-- name: step_rows
SELECT id, step, item, state, exit_code, result FROM jobs
WHERE pipeline_id = :pipeline_id AND step = :step ORDER BY item;

-- name: step_outputs
SELECT j.id, o.path, o.digest FROM jobs j
JOIN outputs o ON o.job_id = j.id
 AND o.attempt = CASE WHEN j.attempts > 0 THEN j.attempts ELSE 1 END
WHERE j.pipeline_id = :pipeline_id AND j.step = :step;

-- name: unfinished_items
SELECT id FROM jobs
WHERE pipeline_id = :pipeline_id AND step = :step AND item IS NOT NULL
  AND state IN ('waiting', 'pending', 'scheduled', 'running', 'paused')
ORDER BY item;

-- name: insert_pipeline
INSERT INTO pipelines (id, name, owner, state, definition, retry_of, jobs_left, created_at,
                       updated_at)
VALUES (:id, :name, :owner, 'running', :definition, :retry_of, :jobs_left, :now, :now);

-- name: get_pipeline
SELECT * FROM pipelines WHERE id = :id;

-- name: list_pipelines
SELECT * FROM pipelines WHERE (CAST(:owner AS TEXT) IS NULL OR owner = CAST(:owner AS TEXT))
ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: pipeline_jobs
SELECT id FROM jobs WHERE pipeline_id = :pipeline_id ORDER BY created_at, item, id;

-- name: pipeline_step_jobs
-- A run's jobs as its status shows them: a step's own result, not an item's.
SELECT id, step, item, state, message, exit_code, cached_from,
       CASE WHEN item IS NULL THEN result END AS result
FROM jobs WHERE pipeline_id = :pipeline_id ORDER BY created_at, item, id;

-- name: pipeline_add_jobs
UPDATE pipelines SET jobs_left = jobs_left + :count, updated_at = :now WHERE id = :id;

-- name: pipeline_step_ended
UPDATE pipelines SET jobs_left = jobs_left - 1, failures = failures + :failed, updated_at = :now
WHERE id = :id
RETURNING jobs_left, failures, cancel_requested;

-- name: finish_pipeline
UPDATE pipelines SET state = :state, finished_at = :now, updated_at = :now WHERE id = :id;

-- name: cancel_pipeline
UPDATE pipelines SET cancel_requested = 1, updated_at = :now WHERE id = :id;

-- name: insert_pipeline_event
INSERT INTO pipeline_events (pipeline_id, kind, message, at)
VALUES (:pipeline_id, :kind, :message, :at);

-- name: pipeline_events
SELECT id, kind, message, at FROM pipeline_events WHERE pipeline_id = :pipeline_id ORDER BY id;

-- --- the pool: replicas, reputation and the ledger (issue 23) -------------------------

-- name: fragment_replica
-- A replica is not taken by a node whose operator runs, or ran, one of its job's replicas
-- (a lost attempt aside): one operator's nodes are one vote. :operator is the claimer's.
-- A high-consensus job's replica goes to a reputable node (:reputable) first; to any once
-- it has waited (queued before :trusted_until).
(replica_of IS NULL OR (NOT EXISTS (
    SELECT 1 FROM jobs s JOIN attempts a ON a.job_id = s.id JOIN nodes n ON n.id = a.node
    WHERE s.replica_of = jobs.replica_of AND a.state <> 'lost'
      AND COALESCE(n.operator, n.id) = :operator)
  AND (prefer_trusted = 0 OR :reputable = 1 OR created_at <= :trusted_until)))

-- name: node_capacity
-- A claiming node's capacity, its operator (its own id if it has none), its streak of
-- valid results, and whether it or its operator is quarantined.
SELECT n.capacity, COALESCE(n.operator, n.id) AS operator_key,
       (SELECT r.streak FROM reputation r
        WHERE r.subject = 'node:' || COALESCE(n.public_key, n.id)) AS streak,
       EXISTS (SELECT 1 FROM reputation r
               WHERE r.quarantined = 1
                 AND r.subject IN ('node:' || COALESCE(n.public_key, n.id),
                                   'operator:' || COALESCE(n.operator, n.id))) AS quarantined
FROM nodes n WHERE n.id = :node;

-- name: insert_replica
-- One replica of a job: the same spec and shape, its own id, queued now.
INSERT INTO jobs (id, name, owner, state, spec, labels, priority, cpus, memory_mb, gpu_count,
                  gpu_type, gpu_memory_gb, requires, not_before, created_at, updated_at,
                  replica_of, replica, prefer_trusted)
SELECT :id, name || '-r' || CAST(:replica AS TEXT), owner, 'pending', spec, labels, priority,
       cpus, memory_mb, gpu_count, gpu_type, gpu_memory_gb, requires, :now, :now, :now, id,
       :replica, :prefer_trusted
FROM jobs WHERE id = :parent;

-- name: copy_job_inputs
INSERT INTO job_inputs (job_id, digest) SELECT :id, digest FROM job_inputs WHERE job_id = :parent;

-- name: set_replicas
UPDATE jobs SET replicas = :replicas, quorum = :quorum, updated_at = :now WHERE id = :id;

-- name: replicas_of
-- A job's replicas, each with what agreement reads: its digest, and the attempt that ended
-- it (its last) with that node's operator and key.
SELECT j.id, j.state, j.digest, j.exit_code, j.failure_reason, j.attempts, j.result,
       a.node, a.state AS attempt_state, a.scheduled_at, a.started_at, a.finished_at,
       a.wall_seconds, a.cpus, a.memory_mb, a.gpus, a.gpu_model, a.stdout_sha256,
       COALESCE(n.operator, a.node) AS operator_key, COALESCE(n.public_key, a.node) AS node_key,
       n.capacity AS node_capacity
FROM jobs j
LEFT JOIN attempts a ON a.job_id = j.id AND a.number = j.attempts
LEFT JOIN nodes n ON n.id = a.node
WHERE j.replica_of = :parent
ORDER BY j.replica;

-- name: set_digest
UPDATE jobs SET digest = :digest WHERE id = :id;

-- name: set_consensus
UPDATE jobs SET consensus = :consensus WHERE id = :id;

-- name: node_keys
-- The reputation subjects of a node: its key (or id), and its operator (or its id).
SELECT COALESCE(public_key, id) AS node_key, COALESCE(operator, id) AS operator_key
FROM nodes WHERE id = :node;

-- name: reputation_add
-- Add to a record (made if new): an invalid result ends the streak, valid ones extend it.
INSERT INTO reputation (subject, valid, invalid, streak, lost, timeouts, updated_at)
VALUES (:subject, :valid, :invalid, :valid, :lost, :timeouts, :now)
ON CONFLICT (subject) DO UPDATE SET
    valid = reputation.valid + excluded.valid,
    invalid = reputation.invalid + excluded.invalid,
    streak = CASE WHEN excluded.invalid > 0 THEN 0
                  ELSE reputation.streak + excluded.valid END,
    lost = reputation.lost + excluded.lost,
    timeouts = reputation.timeouts + excluded.timeouts,
    updated_at = excluded.updated_at
RETURNING *;

-- name: reputation_of
SELECT * FROM reputation WHERE subject = :subject;

-- name: set_quarantined
INSERT INTO reputation (subject, quarantined, updated_at) VALUES (:subject, :quarantined, :now)
ON CONFLICT (subject) DO UPDATE SET quarantined = excluded.quarantined,
                                    updated_at = excluded.updated_at;

-- name: reputations
SELECT * FROM reputation ORDER BY subject;

-- name: debit_guarded
-- Take from an account that may not go below zero: no row changes if it would. Under
-- PostgreSQL the row lock makes a second debit wait, then see the first one's balance.
UPDATE accounts SET balance = balance - :amount WHERE id = :id AND balance >= :amount
RETURNING balance;

-- name: move_balance
-- Add to an account (a negative amount takes away), opening it if it is new.
INSERT INTO accounts (id, balance, created_at) VALUES (:id, :amount, :now)
ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + excluded.balance;

-- name: insert_transfer
INSERT INTO transfers (at, debit, credit, amount, kind, job_id, memo)
VALUES (:at, :debit, :credit, :amount, :kind, :job_id, :memo);

-- name: account_balance
SELECT balance FROM accounts WHERE id = :id;

-- name: held_by_owner
SELECT COALESCE(sum(held), 0) AS held FROM jobs WHERE owner = :owner AND held > 0;

-- name: set_terms
UPDATE jobs SET terms = :terms, held = :held WHERE id = :id;

-- name: close_escrow
UPDATE jobs SET held = 0, cost = :cost WHERE id = :id;

-- name: transfers_of_job
SELECT * FROM transfers WHERE job_id = :job_id ORDER BY id;

-- name: transfers_of_account
SELECT * FROM transfers WHERE (debit = :account OR credit = :account) AND id < :before
ORDER BY id DESC LIMIT :limit;

-- name: check_balances
-- Accounts whose kept balance is not what their transfers add up to.
SELECT a.id, a.balance, COALESCE(c.amount, 0) - COALESCE(d.amount, 0) AS computed
FROM accounts a
LEFT JOIN (SELECT credit AS id, sum(amount) AS amount FROM transfers GROUP BY credit) c
       ON c.id = a.id
LEFT JOIN (SELECT debit AS id, sum(amount) AS amount FROM transfers GROUP BY debit) d
       ON d.id = a.id
WHERE a.balance <> COALESCE(c.amount, 0) - COALESCE(d.amount, 0);

-- name: check_escrow
-- Jobs whose escrow transfers do not net to what they hold, or that ended holding some.
SELECT j.id, j.state, j.held, e.amount AS in_escrow
FROM jobs j JOIN (
    SELECT job_id, sum(CASE WHEN credit = 'escrow' THEN amount ELSE 0 END)
                 - sum(CASE WHEN debit = 'escrow' THEN amount ELSE 0 END) AS amount
    FROM transfers WHERE job_id IS NOT NULL GROUP BY job_id) e ON e.job_id = j.id
WHERE e.amount <> j.held
   OR (j.held <> 0 AND j.state IN ('completed', 'failed', 'cancelled', 'skipped'));

-- name: ledger_totals
SELECT COALESCE(sum(balance), 0) AS total, count(*) AS accounts,
       (SELECT count(*) FROM transfers) AS transfers,
       (SELECT COALESCE(sum(held), 0) FROM jobs WHERE held > 0) AS held,
       (SELECT balance FROM accounts WHERE id = 'escrow') AS escrow
FROM accounts;

-- name: overdrawn
SELECT id, balance FROM accounts WHERE balance < 0 AND id <> 'world';

-- name: job_costs
-- What an owner's jobs paid since :since, with what a report groups them by.
SELECT id, name, labels, finished_at, cost FROM jobs
WHERE owner = :owner AND cost IS NOT NULL AND finished_at >= :since
ORDER BY finished_at;

-- name: attempts_of
-- A job's attempts, each with the operator of its node (the node's id if it has none).
SELECT a.*, COALESCE(n.operator, a.node) AS operator_key, n.capacity AS node_capacity
FROM attempts a LEFT JOIN nodes n ON n.id = a.node
WHERE a.job_id = :job_id ORDER BY a.number;

-- name: pool_counts
-- The pool's queue and throughput: jobs pending, running, and ended since :since (replicas
-- count as the work they are; the jobs they stand for do not).
SELECT (SELECT count(*) FROM jobs WHERE state = 'pending') AS pending,
       (SELECT count(*) FROM jobs WHERE state IN ('scheduled', 'running', 'paused')) AS running,
       (SELECT count(*) FROM jobs WHERE finished_at >= :since AND replicas IS NULL)
           AS ended,
       (SELECT count(*) FROM jobs WHERE finished_at >= :since AND replicas IS NOT NULL
           AND state = 'completed') AS agreed,
       (SELECT count(*) FROM jobs WHERE finished_at >= :since
           AND failure_reason = 'no_consensus') AS no_consensus;

-- name: note_request
-- A key-signed request's signature, once: no row is added if it was seen (a replay).
INSERT INTO request_nonces (signature, at) VALUES (:signature, :at)
ON CONFLICT (signature) DO NOTHING;

-- name: forget_requests
DELETE FROM request_nonces WHERE at < :before;

-- --- volumes and secrets (store/data.py) -------------------------------------------------

-- name: insert_volume
INSERT INTO volumes (id, owner, name, size_mb, shared, created_at)
VALUES (:id, :owner, :name, :size_mb, :shared, :now);

-- name: volume_by_name
SELECT * FROM volumes WHERE owner = :owner AND name = :name AND deleted_at IS NULL;

-- name: volume_by_id
SELECT * FROM volumes WHERE id = :id;

-- name: job_volume_node
-- A volume the job mounts that lives on a node (all such live on one).
SELECT v.name, v.node FROM job_volumes jv JOIN volumes v ON v.id = jv.volume_id
WHERE jv.job_id = :job_id AND v.node IS NOT NULL ORDER BY v.name LIMIT 1;

-- name: list_volumes
-- An owner's volumes (all owners' for NULL), with how many unfinished jobs mount each.
SELECT v.*, (SELECT count(*) FROM job_volumes jv JOIN jobs j ON j.id = jv.job_id
             WHERE jv.volume_id = v.id
               AND j.state IN ('waiting', 'pending', 'scheduled', 'running', 'paused'))
           AS in_use
FROM volumes v
WHERE v.deleted_at IS NULL AND (CAST(:owner AS TEXT) IS NULL OR v.owner = :owner)
ORDER BY v.owner, v.name;

-- name: volume_users
-- The unfinished jobs that mount a volume, and whether each writes it.
SELECT jv.job_id, jv.writes FROM job_volumes jv JOIN jobs j ON j.id = jv.job_id
WHERE jv.volume_id = :volume_id
  AND j.state IN ('waiting', 'pending', 'scheduled', 'running', 'paused');

-- name: insert_job_volume
INSERT INTO job_volumes (job_id, volume_id, writes) VALUES (:job_id, :volume_id, :writes);

-- name: job_volumes
-- What a job mounts: each volume's row, and whether the job writes it.
SELECT v.*, jv.writes FROM job_volumes jv JOIN volumes v ON v.id = jv.volume_id
WHERE jv.job_id = :job_id;

-- name: pin_volume
UPDATE volumes SET node = :node WHERE id = :id AND node IS NULL;

-- name: unclaimed_on_volume
-- The jobs mounting a volume that no node holds yet: they follow it where it is pinned.
SELECT j.id, j.requires FROM job_volumes jv JOIN jobs j ON j.id = jv.job_id
WHERE jv.volume_id = :volume_id AND j.state IN ('waiting', 'pending');

-- name: set_requires
UPDATE jobs SET requires = :requires WHERE id = :id;

-- name: mark_volume_deleted
UPDATE volumes SET deleted_at = :now WHERE id = :id;

-- name: drop_volume
DELETE FROM volumes WHERE id = :id;

-- name: node_name
SELECT name FROM nodes WHERE id = :id;

-- name: upsert_secret
INSERT INTO secrets (owner, name, sealed, created_at, updated_at)
VALUES (:owner, :name, :sealed, :now, :now)
ON CONFLICT (owner, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at;

-- name: list_secrets
SELECT owner, name, created_at, updated_at FROM secrets
WHERE CAST(:owner AS TEXT) IS NULL OR owner = :owner ORDER BY owner, name;

-- name: get_secret
SELECT sealed FROM secrets WHERE owner = :owner AND name = :name;

-- name: delete_secret
DELETE FROM secrets WHERE owner = :owner AND name = :name;

-- name: upsert_environment
INSERT INTO environments (owner, name, spec, created_at) VALUES (:owner, :name, :spec, :now)
ON CONFLICT (owner, name) DO UPDATE SET spec = excluded.spec, created_at = excluded.created_at;

-- name: list_environments
SELECT * FROM environments WHERE CAST(:owner AS TEXT) IS NULL OR owner = :owner
ORDER BY owner, name;

-- name: get_environment
SELECT * FROM environments WHERE owner = :owner AND name = :name;

-- name: delete_environment
DELETE FROM environments WHERE owner = :owner AND name = :name;

-- --- the server's identity (store/store.py) -----------------------------------------------

-- name: insert_server_identity
-- The first server's key wins; later ones read it.
INSERT INTO server_identity (id, private_key, created_at) VALUES (1, :private_key, :at)
ON CONFLICT (id) DO NOTHING;

-- name: server_identity
SELECT private_key FROM server_identity WHERE id = 1;

-- --- a running job's life (store/lifecycle.py) --------------------------------------------

-- name: set_paused
-- Pause (state 'paused', with what it holds said in its message) or resume ('running').
UPDATE jobs SET state = :state, message = :message, updated_at = :now WHERE id = :id;

-- name: attempt_node_name
SELECT a.state, a.node, a.started_at, n.name FROM attempts a LEFT JOIN nodes n ON n.id = a.node
WHERE a.job_id = :job_id AND a.number = :number;

-- name: request_checkpoint
UPDATE jobs SET checkpoint_requested_at = :now, updated_at = :now WHERE id = :id;

-- name: insert_checkpoint
INSERT INTO checkpoints (job_id, attempt, digest, size, created_at)
VALUES (:job_id, :attempt, :digest, :size, :now)
ON CONFLICT (job_id, attempt) DO NOTHING;

-- name: set_checkpoint
-- The checkpoint the job's next attempt starts from: always its newest kept one.
UPDATE jobs SET checkpoint = :digest WHERE id = :id;

-- name: prune_checkpoints
DELETE FROM checkpoints
WHERE job_id = :job_id
  AND attempt NOT IN (SELECT attempt FROM checkpoints WHERE job_id = :job_id
                      ORDER BY attempt DESC LIMIT :keep);

-- name: list_checkpoints
SELECT attempt, digest, size, created_at FROM checkpoints
WHERE job_id = :job_id ORDER BY attempt;

-- name: preempt_candidates
-- The pending jobs first in line (priority, then age) that have waited since :since: the
-- ones that may preempt, the first that fits no node's free room and can have room made.
SELECT * FROM jobs
WHERE state = 'pending' AND not_before <= :now AND created_at <= :since
  AND replica_of IS NULL
ORDER BY priority DESC, created_at, id
LIMIT :most;

-- name: preemption_in_progress
-- An attempt still running that was asked to make room: one preemption at a time.
SELECT 1 AS found FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state IN ('scheduled', 'running') AND j.preempt_requested_at > a.started_at
LIMIT 1;

-- name: preemptible_attempts
-- Running attempts of jobs below :priority preempted fewer than :most times (whether
-- each job allows it is in its spec: the service reads it).
SELECT j.*, a.node AS attempt_node, a.number AS attempt_number
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state = 'running' AND j.state = 'running' AND j.priority < :priority
  AND j.preemptions < :most
ORDER BY j.priority, a.started_at DESC;

-- name: request_preempt
UPDATE jobs SET preempt_requested_at = :now, preemptions = preemptions + 1, updated_at = :now
WHERE id = :id AND state = 'running' AND attempts = :attempt;

-- name: reserve_for_preemption
-- The node being emptied for the job keeps itself for it (taken from any other node).
UPDATE jobs SET reserved_node = :node, reserved_at = :now WHERE id = :job AND state = 'pending';
