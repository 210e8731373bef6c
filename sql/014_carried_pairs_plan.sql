-- An incremental run stores the pairs it carries over unchanged while its engine runs, not in
-- the planning transaction (about 2 s at 10M rows). The plan records how many there are, and
-- verification refuses the run until every one is stored. NULL: stored when planned (earlier runs).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pairs_carried_plan bigint;
