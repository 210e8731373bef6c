"""Imported models of every exporter shape on Spark: the same stored outputs as Beam, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings
from tests import byom

pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


def test_spark_stores_the_outputs_beam_stores_for_every_shape(
    spark, local_master, database_url, other_database_url, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from pipelines.store.db import migrate

    byom.import_all(tmp_path / "models", tmp_path)
    source = byom.scoring_input(tmp_path / "input")
    for url in (database_url, other_database_url):
        migrate(url)
    common = {"home": tmp_path / "home", "models_dir": tmp_path / "models", "workers": 2}
    on_spark = Settings(database_url=database_url, spark_master=local_master, **common)  # type: ignore[arg-type]
    on_beam = Settings(database_url=other_database_url, **common)  # type: ignore[arg-type]
    for shape in byom.SHAPES:
        s = run_job(on_spark, RunRequest(model=shape.name, input=source, engine="spark", shard_rows=90))
        b = run_job(on_beam, RunRequest(model=shape.name, input=source, engine="beam", shard_rows=150))
        spark_rows = byom.stored_outputs(database_url, s.run_id)
        assert len(spark_rows) >= 498
        assert spark_rows == byom.stored_outputs(other_database_url, b.run_id)
