-- 0004: the blobs a job brings (inputs, code bundle), so retention keeps them while the
-- job is kept; and the git commit each attempt checked out.
CREATE TABLE job_inputs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (job_id, digest)
);
CREATE INDEX job_inputs_digest ON job_inputs (digest);
ALTER TABLE attempts ADD COLUMN git_commit TEXT;
