-- 0003: how each node confines its jobs (its sandbox report, JSON).
ALTER TABLE nodes ADD COLUMN sandbox TEXT;
