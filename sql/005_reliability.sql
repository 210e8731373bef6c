-- Reliability (issue 14): guarded run states with a lease, an event log of every move,
-- the artifact a run scored with, and rows rejected before planning. Idempotent.

-- A rolled-back run keeps its own state, so a plain publish never brings it back.
ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (
    status IN ('planned', 'scoring', 'failed', 'verified', 'published', 'rolled_back', 'abandoned')
);
-- Runs rolled back before this migration were returned to 'verified': mark them.
UPDATE runs r SET status = 'rolled_back'
WHERE r.status = 'verified' AND r.publish_id IS NULL
  AND EXISTS (SELECT 1 FROM publishes p WHERE p.rolled_back_at IS NOT NULL AND r.run_id = ANY(p.run_ids));

ALTER TABLE runs
    -- The process scoring the run ("host:pid:nonce") and until when its lease holds.
    ADD COLUMN IF NOT EXISTS owner              text,
    ADD COLUMN IF NOT EXISTS lease_expires_at   timestamptz,
    ADD COLUMN IF NOT EXISTS heartbeat_at       timestamptz,
    -- sha256 of the ONNX file the run scores with (versions are immutable: it never changes).
    ADD COLUMN IF NOT EXISTS artifact_sha256    text,
    -- Rows rejected while planning (null or empty keys): in rejects with shard_id 'plan'.
    ADD COLUMN IF NOT EXISTS rows_rejected_plan bigint NOT NULL DEFAULT 0;

-- Every state move of a run: what happened, by whom, why.
CREATE TABLE IF NOT EXISTS run_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    owner       text,
    detail      text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS run_events_run_idx ON run_events (run_id, event_id);
