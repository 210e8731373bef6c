"""Every entry point observes: `run_job` (predcache run), backfill, and a skipped rerun does not redo it."""

from __future__ import annotations

from datetime import date

import psycopg

from pipelines.backfill import backfill_job
from pipelines.jobs import RunRequest, run_job
from tests.monitoring.conftest import ToyCache, write_toy_input


def _observed(url: str) -> dict[int, object]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT run_id, created_at FROM run_stats").fetchall())


def test_a_run_stores_its_statistics_and_drift(toy_cache: ToyCache) -> None:
    with psycopg.connect(toy_cache.url) as conn:
        row = conn.execute(
            "SELECT output_stats FROM run_stats WHERE run_id = %s", (toy_cache.run_id,)
        ).fetchone()
    assert row is not None
    (outputs,) = row
    assert outputs["score"]["count"] == len(toy_cache.scores)


def test_a_backfill_observes_every_day_and_a_rerun_observes_nothing_again(toy_cache: ToyCache) -> None:
    for day in ("2013-08-01", "2013-08-02"):
        write_toy_input(toy_cache.folder / f"bf/date={day}", "part", rows=50, seed=int(day[-1]))
    template = str(toy_cache.folder / "bf/date={date}")
    kwargs = {"model": "toy", "template": template, "start": date(2013, 8, 1), "end": date(2013, 8, 2)}
    summaries = backfill_job(toy_cache.settings, **kwargs)  # type: ignore[arg-type]
    observed = _observed(toy_cache.url)
    assert all(s.run_id in observed for s in summaries)
    again = backfill_job(toy_cache.settings, **kwargs)  # type: ignore[arg-type]
    assert all(s.skipped for s in again) and _observed(toy_cache.url) == observed


def test_a_skipped_run_that_was_never_observed_is_observed(toy_cache: ToyCache) -> None:
    with psycopg.connect(toy_cache.url) as conn:
        conn.execute("DELETE FROM run_stats WHERE run_id = %s", (toy_cache.run_id,))
    source = toy_cache.folder / "input" / "day1.parquet"
    summary = run_job(toy_cache.settings, RunRequest(model="toy", input=source, publish=True))
    assert summary.skipped and summary.run_id in _observed(toy_cache.url)
