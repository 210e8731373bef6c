-- Incremental refresh (issue 12): every prediction carries the fingerprint of the inputs it was
-- computed from (pipelines/core/fingerprint.py), so a later run can skip rows whose inputs did
-- not change; --prune-missing hides keys absent from a snapshot with tombstone rows.

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS input_fp bigint;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS pruned boolean NOT NULL DEFAULT false;
-- Partitions loaded detached (a version's first run, load-then-index) do not follow the parent.
DO $$
DECLARE part regclass;
BEGIN
    FOR part IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relkind = 'r' AND c.relname LIKE 'predictions\_v%' AND NOT c.relispartition
    LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS input_fp bigint', part);
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS pruned boolean NOT NULL DEFAULT false', part);
    END LOOP;
END
$$;

ALTER TABLE runs ADD COLUMN IF NOT EXISTS incremental boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS prune_missing boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS input_schema text;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS rows_unchanged bigint;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS rows_pruned bigint;
ALTER TABLE run_shards ADD COLUMN IF NOT EXISTS rows_unchanged bigint;

-- Per key: the newest published row of the active version, unless that row is a tombstone
-- (the columns of sql/004's view, then input_fp). The (model, key) filter of a lookup still
-- pushes down into the DISTINCT ON: an index scan.
CREATE OR REPLACE VIEW predictions_current AS
SELECT c.model, c.version, c.key, c.score, c.label, c.computed_at, c.run_id, c.outputs, c.input_fp
FROM (
    SELECT DISTINCT ON (a.model, p.key)
        a.model,
        a.version,
        p.key,
        p.score,
        p.label,
        p.computed_at,
        p.run_id,
        coalesce(p.outputs::jsonb, jsonb_strip_nulls(jsonb_build_object('score', p.score, 'label', p.label)))
            AS outputs,
        p.input_fp,
        p.pruned
    FROM active_versions a
    JOIN predictions p ON p.version_id = a.version_id
    JOIN runs r ON r.run_id = p.run_id AND r.publish_id IS NOT NULL
    ORDER BY a.model, p.key, r.publish_id DESC, p.run_id DESC
) c
WHERE NOT c.pruned;

CREATE OR REPLACE VIEW predictions_published AS
SELECT r.model, r.version, p.key, p.score, p.label, p.computed_at, p.run_id, r.publish_id,
    coalesce(p.outputs::jsonb, jsonb_strip_nulls(jsonb_build_object('score', p.score, 'label', p.label)))
        AS outputs
FROM predictions p
JOIN runs r ON r.run_id = p.run_id AND r.publish_id IS NOT NULL
WHERE NOT p.pruned;
