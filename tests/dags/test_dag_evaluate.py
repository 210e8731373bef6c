"""`airflow dags test` of day D evaluates day D-2 on the outcomes that landed under `_labels/`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipelines.backfill import backfill_job
from pipelines.settings import Settings

DAG_ID = "batch_predict_flights_delay"
MODEL = "flights_delay"

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_the_run_of_a_day_evaluates_the_day_two_days_before(
    airflow_home: Callable[[str], Any],
    new_database: Callable[[], str],
    flights_dir: Path,
    flights_models_dir: Path,
    tmp_path: Path,
) -> None:
    url = new_database()
    settings = Settings(database_url=url, home=tmp_path / "home", models_dir=flights_models_dir)
    day = date(2013, 7, 2)
    backfill_job(
        settings,
        model=MODEL,
        template=str(flights_dir / "date={date}"),
        start=day,
        end=day,
        publish_runs=True,
    )
    done = airflow_home(url).run("dags", "test", DAG_ID, "2013-07-04")
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    with psycopg.connect(url) as conn:
        labelled_days = [row[0] for row in conn.execute("SELECT DISTINCT day FROM labels ORDER BY 1")]
        evaluated = conn.execute(
            "SELECT matched, coverage, metrics ->> 'auc' FROM evaluations "
            "WHERE model = %s AND scope = 'day' AND scope_key = '2013-07-02'",
            (MODEL,),
        ).fetchone()
    assert labelled_days == [date(2013, 7, 1), date(2013, 7, 2)]  # the window's days that landed
    assert evaluated is not None and evaluated[0] > 800 and evaluated[1] > 0.9
    assert 0.5 < float(evaluated[2]) < 0.9
