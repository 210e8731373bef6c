-- Incremental refresh compares in the planner (pipelines/core/changes.py): each run keeps the
-- (key hash, input fingerprint) pairs of the rows it stored, one part per shard written in the
-- shard's own transaction, and an incremental run also keeps the pairs it carried over unchanged
-- (written with its plan). The pairs of the version's newest published run are the next
-- incremental run's basis. Pairs are 16 bytes a row (little-endian int64 key hash, int64
-- fingerprint), sorted by key hash within a part; stored uncompressed (hashes do not compress).
CREATE TABLE IF NOT EXISTS run_fingerprints (
    run_id  bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    part    text   NOT NULL,
    pairs   bytea  NOT NULL,
    PRIMARY KEY (run_id, part)
);
ALTER TABLE run_fingerprints ALTER COLUMN pairs SET STORAGE EXTERNAL;

-- The run an incremental run compared with (not a foreign key: collecting that run must not
-- collect this one), and how many rows the planner found unchanged.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS basis_run_id bigint;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS rows_unchanged_plan bigint NOT NULL DEFAULT 0;
-- An incremental run's input statistics, taken by the planner (it reads every row anyway):
-- observing the run then does not read the snapshot again.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS input_stats_plan jsonb;
