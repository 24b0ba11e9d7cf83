-- 0010: security. A token can be revoked; a worker key is bound to the node name that
-- first registered it; a blob is visible to the owners who uploaded it (or whose jobs made
-- or use it: outputs, job_inputs).
ALTER TABLE tokens ADD COLUMN revoked_at REAL;
CREATE TABLE worker_keys (
    public_key TEXT PRIMARY KEY,
    node_name  TEXT NOT NULL,
    first_seen REAL NOT NULL
);
CREATE TABLE blob_owners (
    digest TEXT NOT NULL,
    owner  TEXT NOT NULL,
    PRIMARY KEY (digest, owner)
);
