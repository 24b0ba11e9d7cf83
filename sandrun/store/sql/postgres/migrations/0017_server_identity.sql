-- 0017: the server's own Ed25519 identity (issue 30): one row, written by the first server
-- to start on this database; every server on it signs as that key, so servers behind one
-- URL are one worker to a pool coordinator.
CREATE TABLE server_identity (
    id          integer PRIMARY KEY CHECK (id = 1),
    private_key text NOT NULL,
    created_at  double precision NOT NULL
);
