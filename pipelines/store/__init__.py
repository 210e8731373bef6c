"""PostgreSQL cache: connection, schema, run ledger, exactly-once writer, publish/rollback, lookup."""
