-- 0006: the GPU model and memory a job asks for, so a claim matches them to the node's.
ALTER TABLE jobs ADD COLUMN gpu_type TEXT;
ALTER TABLE jobs ADD COLUMN gpu_memory_gb REAL NOT NULL DEFAULT 0;
