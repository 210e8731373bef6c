"""Continued evaluation: metrics computed in PostgreSQL equal scikit-learn's on the same served scores."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from pipelines.monitoring.evaluate import evaluate
from pipelines.monitoring.labels import load_labels
from tests.monitoring.conftest import ToyCache, write_labels

DAY = date(2013, 7, 1)


def _outcomes(cache: ToyCache) -> dict[str, float | None]:
    rng = np.random.default_rng(11)
    keys = sorted(cache.scores)
    # Outcomes drawn from the scores themselves, so the AUC is informative (not 0.5); a few unknown.
    return {
        key: (None if i % 50 == 0 else float(rng.random() < cache.scores[key])) for i, key in enumerate(keys)
    }


@pytest.fixture(scope="module")
def evaluated(toy_cache: ToyCache, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    outcomes = _outcomes(toy_cache)
    folder = tmp_path_factory.mktemp("labels") / f"date={DAY}"
    write_labels(folder / "part-0.parquet", outcomes)
    load_labels(toy_cache.settings, model="toy", source=folder.parent, key="id", label="y")
    return outcomes, evaluate(toy_cache.settings, model="toy")


def test_binary_metrics_match_scikit_learn(toy_cache: ToyCache, evaluated) -> None:  # type: ignore[no-untyped-def]
    outcomes, result = evaluated
    known = {k: v for k, v in outcomes.items() if v is not None}
    y = np.array([known[k] for k in sorted(known)])
    p = np.array([toy_cache.scores[k] for k in sorted(known)], dtype=np.float64)
    (whole,) = result.scope("all")
    assert whole.metrics["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert whole.metrics["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-5)
    assert whole.metrics["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-6)
    assert whole.metrics["positive_rate"] == pytest.approx(y.mean(), abs=1e-6)
    assert (whole.matched, whole.labels, whole.coverage) == (len(known), len(known), 1.0)


def test_metrics_are_stored_per_run_day_and_week_with_calibration_bins(
    toy_cache: ToyCache, evaluated
) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(toy_cache.url) as conn:
        rows: dict[str, str] = dict(
            conn.execute("SELECT scope, scope_key FROM evaluations WHERE model = 'toy'").fetchall()
        )
        found = conn.execute(
            "SELECT metrics -> 'calibration' FROM evaluations WHERE model = 'toy' AND scope = 'day'"
        ).fetchone()
    assert found is not None
    bins = found[0]
    assert (
        rows["run"] == str(toy_cache.run_id) and rows["day"] == "2013-07-01" and rows["week"] == "2013-07-01"
    )
    assert sum(b["n"] for b in bins) == len(toy_cache.scores) - 8  # 8 of 400 labels are null


def test_a_run_covers_the_share_of_its_predictions_that_got_a_label(toy_cache: ToyCache, evaluated) -> None:  # type: ignore[no-untyped-def]
    _, result = evaluated
    (run,) = result.scope("run")
    assert (run.scope_key, run.labels, run.matched) == (str(toy_cache.run_id), 400, 392)
    assert run.coverage == pytest.approx(0.98)


def test_a_label_known_before_the_publish_matches_no_served_prediction(
    toy_cache: ToyCache,
    evaluated,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    outcomes, before = evaluated
    key = next(k for k, v in sorted(outcomes.items()) if v is not None)
    path = write_labels(tmp_path / "early.parquet", {key: outcomes[key]})
    early = datetime(2000, 1, 1, tzinfo=UTC).isoformat()
    load_labels(toy_cache.settings, model="toy", source=path, key="id", label="y", as_of=early)
    (whole,) = evaluate(toy_cache.settings, model="toy").scope("all")
    assert whole.matched == before.scope("all")[0].matched - 1
