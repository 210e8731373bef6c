-- What the lookup API's /metrics gauges read (issue 11), as views: the API's login may read
-- these aggregates but not the ledger, the run stats or the labels behind them (sql/010).

CREATE OR REPLACE VIEW monitoring_age AS
SELECT a.model, extract(epoch FROM now() - max(pb.published_at))::float8 AS age
FROM active_versions a
JOIN runs r ON r.version_id = a.version_id AND r.publish_id IS NOT NULL
JOIN publishes pb ON pb.publish_id = r.publish_id
GROUP BY a.model;

CREATE OR REPLACE VIEW monitoring_drift AS
SELECT DISTINCT ON (r.model) r.model, s.drift::text AS drift
FROM run_stats s JOIN runs r ON r.run_id = s.run_id
ORDER BY r.model, r.run_id DESC;

CREATE OR REPLACE VIEW monitoring_metrics AS
SELECT DISTINCT ON (model) model, metrics::text AS metrics
FROM evaluations WHERE scope = 'week' AND matched > 0
ORDER BY model, scope_key DESC;

GRANT SELECT ON monitoring_age, monitoring_drift, monitoring_metrics TO predcache_reader;
