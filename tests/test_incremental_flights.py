"""Incremental refresh of the reference model on real flights: the run's statistics and cache.

The planner takes an incremental run's input statistics while it compares (unchanged rows, plus
the forwarded rows validation keeps); they must be what observing a full run of the same
snapshot finds, so drift monitoring does not depend on how a run was scored. Exact, that is,
wherever merged statistics are exact (``core.stats.merge_stats``): counts, nulls, numeric moments
and histograms, the counts of the reference's top values, and so the drift; a merged categorical
column's other top values and its ``distinct`` depend on how the rows were batched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.model import load_model
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import DEFAULT_MODELS_DIR
from pipelines.store.db import connection
from tests.stats_compare import close, exact_parts

WEEK = 7


def _second_snapshot(first: Path, out: Path) -> Path:
    """Every 50th flight 1 degree warmer, one temperature missing, two new flights."""
    out.mkdir()
    table = pq.read_table(first, partitioning=None)
    table = table.drop_columns([c for c in table.column_names if c == "date"])
    temp = table.column("temp").to_pylist()
    for i in range(0, len(temp), 50):
        temp[i] = None if i == 100 else (temp[i] or 0.0) + 1.0
    table = table.set_column(table.schema.get_field_index("temp"), "temp", pa.array(temp, pa.float64()))
    new = table.slice(0, 2)
    new = new.set_column(0, "flight_id", pc.binary_join_element_wise(new.column("flight_id"), "new", ""))
    pq.write_table(pa.concat_tables([table, new]), out / "part-0.parquet")
    return out


def _stored(url: str, run_id: int, reference: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input statistics without their batching-dependent parts, drift) of a run."""
    with connection(url) as conn:
        row = conn.execute("SELECT input_stats, drift FROM run_stats WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return exact_parts(row[0], reference), row[1]


def test_an_incremental_runs_input_statistics_equal_a_full_runs_observation(
    migrated_url, other_database, settings_for, flights_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    day = flights_dir / "date=2013-07-01"
    second = _second_snapshot(day, tmp_path / "second")
    incremental_settings = settings_for(migrated_url)
    run_job(incremental_settings, RunRequest(model="flights_delay", input=day, publish=True, rerun=True))
    incremental = run_job(
        incremental_settings,
        RunRequest(model="flights_delay", input=second, incremental=True, publish=True),
    )
    full = run_job(
        settings_for(other_database), RunRequest(model="flights_delay", input=second, publish=True)
    )
    assert incremental.rows_unchanged > 0 and incremental.rows_in == full.rows_in
    assert (incremental.rows_rejected, full.rows_rejected) == (full.rows_rejected, incremental.rows_rejected)
    with connection(migrated_url) as conn:
        planned = conn.execute(
            "SELECT input_stats_plan IS NOT NULL FROM runs WHERE run_id = %s", (incremental.run_id,)
        ).fetchone()
    assert planned == (True,)  # taken by the planner, not by reading the snapshot again
    reference = load_model(DEFAULT_MODELS_DIR, "flights_delay").card.reference_stats
    mine = _stored(migrated_url, incremental.run_id, reference)
    theirs = _stored(other_database, full.run_id, reference)
    differ = [name for name in theirs[0] if not close(mine[0].get(name), theirs[0][name])]
    assert mine[0].keys() == theirs[0].keys() and not differ, {n: (mine[0][n], theirs[0][n]) for n in differ}
    # The drift of every input (the outputs observed are the rows each run stored: all, or the rescored).
    inputs = set(theirs[0])
    assert close(
        {k: v for k, v in mine[1].items() if k in inputs}, {k: v for k, v in theirs[1].items() if k in inputs}
    )
