-- 0010: security. A token can be revoked; a worker key is bound to the node name that
-- first registered it; a blob is visible to the owners who uploaded it (or whose jobs made
-- or use it: outputs, job_inputs).
ALTER TABLE tokens ADD COLUMN revoked_at double precision;
CREATE TABLE worker_keys (
    public_key text PRIMARY KEY,
    node_name  text NOT NULL,
    first_seen double precision NOT NULL
);
CREATE TABLE blob_owners (
    digest text NOT NULL,
    owner  text NOT NULL,
    PRIMARY KEY (digest, owner)
);
