-- 0008: fair share and reservations. Claims walk each owner's queue (jobs_owner_queue)
-- and count each owner's running work (jobs_active); a node keeps itself free for the job
-- it reserved (reserved_node), backfilling only what will not delay it.
ALTER TABLE jobs ADD COLUMN reserved_node TEXT;
ALTER TABLE jobs ADD COLUMN reserved_at REAL;
CREATE INDEX jobs_owner_queue ON jobs (owner, priority DESC, created_at, id) WHERE state = 'pending';
CREATE INDEX jobs_active ON jobs (owner) WHERE state IN ('scheduled', 'running');
CREATE INDEX jobs_reserved ON jobs (reserved_node) WHERE state = 'pending' AND reserved_node IS NOT NULL;
