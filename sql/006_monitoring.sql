-- Monitoring: late labels, continued evaluation, alerts (issue 11). Idempotent.

-- Ground truth per (model, key). ``day`` is the day the outcome belongs to (e.g. the flight's
-- date; evaluations are grouped by it), ``as_of`` when the outcome was known: the prediction
-- that was served at that moment is the one it is compared with.
CREATE TABLE IF NOT EXISTS labels (
    model     text NOT NULL,
    key       text COLLATE "C" NOT NULL,
    label     double precision,
    day       date,
    as_of     timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, key)
);
CREATE INDEX IF NOT EXISTS labels_day_idx ON labels (model, day);

-- Realised metrics, one row per (model, scope, scope_key): scope 'run' (key = run id),
-- 'day' (YYYY-MM-DD), 'week' (the Monday, YYYY-MM-DD) or 'all' (since..until).
CREATE TABLE IF NOT EXISTS evaluations (
    model        text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('run', 'day', 'week', 'all')),
    scope_key    text NOT NULL,
    run_id       bigint,
    day          date,
    version      text,
    labels       bigint NOT NULL,
    matched      bigint NOT NULL,
    coverage     double precision,
    metrics      jsonb NOT NULL,
    evaluated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, scope, scope_key)
);

-- Alerts fired, one row per (model, condition, subject): the primary key is the dedupe, so a
-- condition fires its webhook once per run (or per stale publish), never in a storm.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id  bigint GENERATED ALWAYS AS IDENTITY,
    model     text NOT NULL,
    condition text NOT NULL,
    subject   text NOT NULL,
    payload   jsonb NOT NULL,
    delivered boolean NOT NULL DEFAULT false,
    fired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, condition, subject)
);

-- The API reads the monitoring tables for its Prometheus gauges.
GRANT SELECT ON labels, evaluations, alerts TO predcache_reader;
