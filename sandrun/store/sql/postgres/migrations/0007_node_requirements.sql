-- 0007: the node labels a job requires (JSON object); a claim matches them to the node's.
ALTER TABLE jobs ADD COLUMN requires text NOT NULL DEFAULT '{}';
