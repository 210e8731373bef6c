-- Least privilege for readers (issue 14, items 11-12). Idempotent; migrates sql/003 forward.
--
-- * predcache_reader keeps only what lookups need: the lookup views, the pointer and a view of
--   served models. No raw rejected rows, no run errors, no ledger tables, no raw predictions
--   (unpublished runs' rows), and tables created later are no longer granted to it by default.
--   Views run with their owner's rights, so reading them needs no grant on the tables below.
-- * predcache_api is the API's LOGIN role: a member of predcache_reader (it inherits its SELECTs)
--   and of nothing else, so it cannot SET ROLE to the owner. Its password is set by `predcache db
--   migrate` (PREDCACHE_API_DB_PASSWORD, or a generated one kept in PREDCACHE_HOME), never here.
--   Server-side limits hold whatever client connects as it.
-- * A migrating user without CREATEROLE cannot create the login role: this file then only warns,
--   and `db migrate` prints the two statements an administrator runs instead.

-- What GET /v1/models shows: the active version, when it was published, how many keys and how
-- fresh (from the ledger: a shard's done_at commits with its rows, so it equals their computed_at).
CREATE OR REPLACE VIEW served_models AS
SELECT a.model,
       a.version,
       p.published_at,
       coalesce((SELECT sum(r.rows_out) FROM runs r
                  WHERE r.version_id = a.version_id AND r.publish_id IS NOT NULL), 0)::bigint AS rows,
       (SELECT max(s.done_at) FROM run_shards s JOIN runs rs ON rs.run_id = s.run_id
         WHERE rs.version_id = a.version_id AND rs.publish_id IS NOT NULL AND s.rows_out > 0) AS newest
FROM active_versions a
JOIN publishes p ON p.publish_id = a.publish_id;

ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM predcache_reader;

-- Everything sql/003 and its default privileges granted (the ledger, rejects, every partition, and
-- any table an earlier migration added), then back only what lookups read. A feature whose API
-- endpoint reads another object grants it explicitly in its own migration.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM predcache_reader;
GRANT SELECT ON predictions_current, predictions_published, served_models, active_versions TO predcache_reader;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'predcache_api') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RAISE WARNING 'predcache: % may not create roles; an administrator must create predcache_api '
                          '(see `predcache db migrate`)', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE predcache_api LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of the cluster migrating at the same time created it
        END;
    END IF;
    IF NOT pg_has_role('predcache_api', 'predcache_reader', 'MEMBER') THEN
        GRANT predcache_reader TO predcache_api;
    END IF;
    -- Server-side limits: a runaway lookup ends after 5 s whatever the client's timeout says.
    -- Set only when missing: the role is cluster-wide and other databases may migrate concurrently.
    IF NOT EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = 'predcache_api' AND s.setdatabase = 0
          AND s.setconfig @> ARRAY['statement_timeout=5s', 'idle_in_transaction_session_timeout=30s',
                                   'default_transaction_read_only=on']
    ) THEN
        ALTER ROLE predcache_api SET statement_timeout = '5s';
        ALTER ROLE predcache_api SET idle_in_transaction_session_timeout = '30s';
        ALTER ROLE predcache_api SET default_transaction_read_only = on;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'predcache: % may not manage predcache_api (%); see `predcache db migrate`', current_user, SQLERRM;
END
$$;

-- Analysts given a login on predcache_reader itself (see docs/sql_lookup.md) get a server-side
-- limit too; role settings apply to the login role of a session, hence one for each.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = 'predcache_reader' AND s.setdatabase = 0
          AND s.setconfig @> ARRAY['statement_timeout=1min']
    ) THEN
        ALTER ROLE predcache_reader SET statement_timeout = '1min';
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'predcache: % may not set statement_timeout of predcache_reader (%)', current_user, SQLERRM;
END
$$;
