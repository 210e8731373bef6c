"""An incremental run on Spark skips exactly what it skips on Beam and leaves the same cache."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]
N = 200


def _write(folder: Path, x_shift: dict[int, float]) -> Path:
    folder.mkdir(parents=True)
    keys = [f"k{i:04d}" for i in range(N)]
    xs = [i / 30 - 3 + x_shift.get(i, 0.0) for i in range(N)]
    pq.write_table(pa.table({"id": keys, "x": xs, "n": [i % 4 for i in range(N)]}), folder / "part-0.parquet")
    return folder


def _current(url: str) -> dict[str, tuple[float, int, int]]:
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT key, score::float8, label, input_fp FROM predictions_current WHERE model = 'toy'"
        )
        return {key: (score, label, fp) for key, score, label, fp in rows}


def test_incremental_on_spark_equals_incremental_on_beam(
    local_master, database_url, other_database_url, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    first = _write(tmp_path / "a", {})
    second = _write(tmp_path / "b", {5: 1.0, 17: -2.0, 150: 0.25})
    summaries = {}
    for url, engine in ((database_url, "spark"), (other_database_url, "beam")):
        settings = settings_for(url, models_dir=toy_models_dir, spark_master=local_master)
        run_job(settings, RunRequest(model="toy", input=first, engine=engine, shard_rows=50, publish=True))
        request = RunRequest(
            model="toy", input=second, engine=engine, shard_rows=50, publish=True, incremental=True
        )
        summaries[engine] = run_job(settings, request)
    assert (summaries["spark"].rows_out, summaries["spark"].rows_unchanged) == (3, N - 3)
    assert (summaries["beam"].rows_out, summaries["beam"].rows_unchanged) == (3, N - 3)
    assert _current(database_url) == _current(other_database_url)
