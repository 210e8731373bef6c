"""`predcache demo`: real data -> committed reference model -> score one day -> publish -> look up."""

from __future__ import annotations

from pathlib import Path

from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings
from pipelines.store.cache import cache_url
from pipelines.store.db import connection
from pipelines.store.ledger import reject_reasons
from pipelines.store.lookup import lookup

DEMO_MODEL = "flights_delay"
DEMO_DAY = "2013-07-02"
DEMO_KEYS = 5


def run_demo(settings: Settings, *, engine: str = "beam", data_dir: Path | None = None) -> None:
    """Run the whole flow once and print what a user would look at."""
    from pipelines.data.flights import write_flights

    data_dir = data_dir or settings.home / "data" / "flights"
    day_dir = data_dir / f"date={DEMO_DAY}"
    if not day_dir.is_dir():
        rows = write_flights(data_dir)
        print(f"1. data: wrote {rows} real 2013 NYC flights to {data_dir} (Parquet, one folder per day)")
    else:
        print(f"1. data: {data_dir} already holds the flights")
    url = cache_url(settings)
    where = (
        "embedded PostgreSQL in " + str(settings.embedded_pgdata)
        if not settings.database_url
        else "PREDCACHE_DATABASE_URL"
    )
    print(f"2. cache: {where}")
    summary = run_job(settings, RunRequest(model=DEMO_MODEL, input=day_dir, engine=engine, publish=True))
    verb = "was already scored" if summary.skipped else f"scored in {summary.seconds:.1f} s on {engine}"
    print(
        f"3. run {summary.run_id}: {DEMO_DAY} {verb}: {summary.rows_in} rows in, "
        f"{summary.rows_out} predictions, {summary.rows_rejected} rejected, "
        f"published {DEMO_MODEL}/{summary.version}"
    )
    with connection(url) as conn:
        keys = [
            row[0]
            for row in conn.execute(
                "SELECT key FROM predictions_current WHERE model = %s AND key LIKE %s ORDER BY key LIMIT %s",
                (DEMO_MODEL, f"{DEMO_DAY}%", DEMO_KEYS),
            ).fetchall()
        ]
        found = lookup(conn, DEMO_MODEL, [*keys, f"{DEMO_DAY}_XX0000_JFK"])
        reasons = reject_reasons(conn, summary.run_id, limit=3)
    for reason, count in reasons:
        print(f"   rejected {count} row(s): {reason}  (all kept in the rejects table)")
    print("4. lookups (predcache lookup --model flights_delay KEY...):")
    for item in found:
        text = f"P(delay>15min)={item.score:.4f}  version {item.version}" if item.found else "not found"
        print(f"   {item.key:<28} {text}")
    example = keys[0] if keys else f"{DEMO_DAY}_UA1545_EWR"
    print("5. the same from SQL:")
    print(
        f"   SELECT key, score, version, computed_at FROM predictions_current\n"
        f"   WHERE model = '{DEMO_MODEL}' AND key = '{example}';"
    )
