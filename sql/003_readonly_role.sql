-- The read-only role the lookup API (and analysts) read the cache as. Idempotent.
--
-- NOLOGIN: the API logs in with the configured URL and takes this role for its whole session
-- (startup parameter role=predcache_reader). To give analysts a login of their own:
--   ALTER ROLE predcache_reader LOGIN PASSWORD '...';   (this file never changes an existing role)
-- Roles are cluster-wide while this file runs once per database: two databases migrating at
-- the same time may both try to create it, hence the duplicate_object guard.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'predcache_reader') THEN
        BEGIN
            CREATE ROLE predcache_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- The migrating role must be a member to take the reader role (superusers always may).
    IF NOT pg_has_role(current_user, 'predcache_reader', 'MEMBER') THEN
        EXECUTE 'GRANT predcache_reader TO ' || quote_ident(current_user);
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO predcache_reader;

-- What readers need: the lookup views, the pointer, the ledger (freshness, counts, history).
-- SELECT on the partitioned parent `predictions` reaches every partition through the parent,
-- including the per-version partitions that runs create later.
GRANT SELECT ON
    predictions_current,
    predictions_published,
    predictions,
    active_versions,
    publishes,
    model_versions,
    runs,
    run_shards,
    run_stats,
    rejects
TO predcache_reader;

-- Partitions (and tables) created later by this role are readable directly too (analysts
-- who name a partition, e.g. predictions_v3); partitions that exist already get the same grant.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO predcache_reader;
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'predictions'::regclass LOOP
        EXECUTE format('GRANT SELECT ON %s TO predcache_reader', part);
    END LOOP;
END
$$;
