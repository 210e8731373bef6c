-- Every model output per key (issue 9): `outputs` is one JSON object, output name -> scalar
-- ([N] and [N, 1] outputs) or list ([N, K] outputs). `score` and `label` stay typed columns.
-- Stored as `json` (the text, checked), read as jsonb through the views: measured with a top-k
-- model's two [N, 10] outputs (200k rows, CSV COPY), jsonb took 3.4-4.2 s to load, json 1.9 s
-- (text 1.2-1.4 s); the cast to jsonb costs a lookup microseconds.
-- Numbers are the shortest text that reads back to the model's float32/float64 bit for bit.
-- NULL `outputs`: the model's outputs are exactly `score` (float32) and `label`, which the typed
-- columns hold; the views build the object from them (jsonb of a real is its shortest exact text).
-- Measured (500k flights_delay rows): storing that jsonb doubled the COPY time for no information.

ALTER TABLE predictions ADD COLUMN IF NOT EXISTS outputs json;

-- Version tables not attached yet (a run in progress) do not inherit the new column.
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relname ~ '^predictions_v[0-9]+$' AND c.relkind = 'r'
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
    LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS outputs json', part);
    END LOOP;
END
$$;

-- Redefined with `outputs` appended (CREATE OR REPLACE keeps the columns before it and the grants).
CREATE OR REPLACE VIEW predictions_current AS
SELECT DISTINCT ON (a.model, p.key)
    a.model,
    a.version,
    p.key,
    p.score,
    p.label,
    p.computed_at,
    p.run_id,
    coalesce(p.outputs::jsonb, jsonb_strip_nulls(jsonb_build_object('score', p.score, 'label', p.label))) AS outputs
FROM active_versions a
JOIN predictions p ON p.version_id = a.version_id
JOIN runs r ON r.run_id = p.run_id AND r.publish_id IS NOT NULL
ORDER BY a.model, p.key, r.publish_id DESC, p.run_id DESC;

CREATE OR REPLACE VIEW predictions_published AS
SELECT r.model, r.version, p.key, p.score, p.label, p.computed_at, p.run_id, r.publish_id,
    coalesce(p.outputs::jsonb, jsonb_strip_nulls(jsonb_build_object('score', p.score, 'label', p.label))) AS outputs
FROM predictions p
JOIN runs r ON r.run_id = p.run_id AND r.publish_id IS NOT NULL;
