"""Alerts reach the webhook once per condition and run (or stale publish), never in a storm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pipelines.core.card import load_card
from pipelines.monitoring.alerts import (
    check_evaluations,
    check_run,
    check_staleness,
    holdout_metric,
    thresholds_for,
)
from pipelines.monitoring.evaluate import evaluate
from pipelines.monitoring.labels import load_labels
from pipelines.settings import DEFAULT_MODELS_DIR
from tests.monitoring.conftest import ToyCache, write_labels

Hook = tuple[str, list[dict[str, Any]]]


def _observed(run_id: int, **drift: float) -> dict[str, object]:
    return {"model": "toy", "run_id": run_id, "drift": drift, "rows_in": 1000, "rows_rejected": 80}


def test_drift_and_rejects_fire_once_per_run(toy_cache: ToyCache, webhook: Hook) -> None:
    url, received = webhook
    settings = toy_cache.settings.model_copy(update={"alert_webhook_url": url})
    first = check_run(settings, _observed(9001, x=0.9, n=0.01))
    again = check_run(settings, _observed(9001, x=1.5, n=0.01))
    assert sorted(a.condition for a in first) == ["drift", "rejects"] and again == []
    assert [(body["condition"], body["subject"]) for body in received] == [
        ("drift", "run:9001"),
        ("rejects", "run:9001"),
    ]
    assert received[0]["psi"] == {"x": 0.9}


def test_ignored_columns_and_drift_below_the_threshold_stay_quiet(toy_cache: ToyCache, webhook: Hook) -> None:
    url, received = webhook
    settings = toy_cache.settings.model_copy(update={"alert_webhook_url": url})
    fired = check_run(
        settings, _observed(9002, x=0.9, n=0.2), thresholds={"drift_ignore": ["x"], "reject_fraction": 0.1}
    )
    assert fired == [] and received == []


def test_per_model_overrides_from_settings_apply_under_the_dag_config(toy_cache: ToyCache) -> None:
    settings = toy_cache.settings.model_copy(
        update={"alert_overrides": {"toy": {"psi": 0.5, "stale_hours": 2}}}
    )
    limits = thresholds_for(settings, "toy", {"psi": 0.3})
    assert (limits.psi, limits.stale_hours, limits.metric_margin) == (0.3, 2, settings.alert_metric_margin)


def test_a_stale_model_alerts_once_per_publish(toy_cache: ToyCache, webhook: Hook) -> None:
    url, received = webhook
    settings = toy_cache.settings.model_copy(update={"alert_webhook_url": url})
    later = datetime.now(UTC) + timedelta(hours=48)
    assert check_staleness(settings, "toy") == []
    assert [a.condition for a in check_staleness(settings, "toy", now=later)] == ["stale"]
    assert check_staleness(settings, "toy", now=later + timedelta(hours=1)) == []
    assert len(received) == 1 and received[0]["age_hours"] >= 47


def test_a_realised_metric_below_the_holdout_figure_alerts(
    toy_cache: ToyCache, webhook: Hook, tmp_path: Path
) -> None:
    url, received = webhook
    settings = toy_cache.settings.model_copy(update={"alert_webhook_url": url})
    rng = np.random.default_rng(5)
    outcomes = {key: float(rng.random() < 0.5) for key in toy_cache.scores}  # unrelated to the scores
    load_labels(
        settings, model="toy", source=write_labels(tmp_path / "y.parquet", outcomes), key="id", label="y"
    )
    evaluate(settings, model="toy")
    with psycopg.connect(toy_cache.url) as conn:
        conn.execute(
            "UPDATE model_versions SET card = card || %s WHERE model = 'toy'",
            (Jsonb({"metrics": {"auc": 0.9}}),),
        )
    fired = check_evaluations(settings, "toy", thresholds={"min_labels": 100})
    assert [a.condition for a in fired] == ["metric:auc"]
    assert check_evaluations(settings, "toy", thresholds={"min_labels": 100}) == []
    assert received[-1]["holdout"] == 0.9 and received[-1]["value"] < 0.85


def test_the_reference_cards_holdout_auc_is_the_default_signatures() -> None:
    card = load_card(DEFAULT_MODELS_DIR / "flights_delay" / "1")
    assert holdout_metric(card, "auc") == pytest.approx(card.metrics["int8"]["auc"])
