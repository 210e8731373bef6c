"""`outputs` of a score/label model: not stored as JSON, built exactly by the views from the typed columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

pytestmark = pytest.mark.slow


def test_typed_columns_stand_in_for_outputs_bit_for_bit(
    migrated_url: str, settings_for, toy_model_builder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    toy_model_builder(models)
    source = tmp_path / "input"
    source.mkdir()
    n = 300
    pq.write_table(
        pa.table(
            {"id": [f"k{i}" for i in range(n)], "x": np.linspace(-3, 3, n), "n": [i % 5 for i in range(n)]}
        ),
        source / "part-0.parquet",
    )
    summary = run_job(
        settings_for(migrated_url, models_dir=models), RunRequest(model="toy", input=source, publish=True)
    )
    with connection(migrated_url) as conn:
        stored = conn.execute("SELECT count(*) FROM predictions WHERE outputs IS NOT NULL").fetchone()
        rows = conn.execute(
            "SELECT score::text, label, outputs::text FROM predictions_current WHERE model = 'toy'"
        ).fetchall()
    assert stored == (0,) and len(rows) == summary.rows_out == n
    for score, label, outputs in rows:
        value = json.loads(outputs)
        assert set(value) == {"score", "label"} and value["label"] == label
        assert np.float32(value["score"]).tobytes() == np.float32(float(score)).tobytes()
