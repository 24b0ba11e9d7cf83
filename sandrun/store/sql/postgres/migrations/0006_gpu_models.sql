-- 0006: the GPU model and memory a job asks for, so a claim matches them to the node's.
ALTER TABLE jobs ADD COLUMN gpu_type text;
ALTER TABLE jobs ADD COLUMN gpu_memory_gb double precision NOT NULL DEFAULT 0;
