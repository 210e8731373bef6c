-- SQL lookup. Per key: the row of the newest published run of the model's active version.
CREATE OR REPLACE VIEW predictions_current AS
SELECT DISTINCT ON (a.model, p.key)
    a.model,
    a.version,
    p.key,
    p.score,
    p.label,
    p.computed_at,
    p.run_id
FROM active_versions a
JOIN predictions p ON p.version_id = a.version_id
JOIN runs r ON r.run_id = p.run_id AND r.publish_id IS NOT NULL
ORDER BY a.model, p.key, r.publish_id DESC, p.run_id DESC;

-- Every published prediction of every version (history by version).
CREATE OR REPLACE VIEW predictions_published AS
SELECT r.model, r.version, p.key, p.score, p.label, p.computed_at, p.run_id, r.publish_id
FROM predictions p
JOIN runs r ON r.run_id = p.run_id AND r.publish_id IS NOT NULL;
