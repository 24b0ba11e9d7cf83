-- 0019: checkpoints (issue 25). An attempt that exits 85 leaves what it saved in
-- $SANDRUN_CHECKPOINT_DIR as a blob; the job keeps the last `checkpoint.keep` of them, and
-- its next attempt starts from jobs.checkpoint (its own latest, or `restore_from`'s).
-- checkpoint_requested_at: when `sandrun checkpoint` last asked its agent to signal it.
ALTER TABLE jobs ADD COLUMN checkpoint text;
ALTER TABLE jobs ADD COLUMN checkpoint_requested_at double precision;
CREATE TABLE checkpoints (
    job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    digest     text NOT NULL,
    size       bigint NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX checkpoints_digest ON checkpoints (digest);
