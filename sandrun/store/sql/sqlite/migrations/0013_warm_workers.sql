-- 0013: a node's warm workers, as its latest heartbeat that carried them said (JSON:
-- counts, and groups by owner and function).
ALTER TABLE nodes ADD COLUMN warm TEXT;
