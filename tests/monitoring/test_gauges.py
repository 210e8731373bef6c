"""The API's /metrics shows prediction age, drift and realised metrics read from the database."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from pipelines.api import create_app
from pipelines.monitoring.evaluate import evaluate
from pipelines.monitoring.labels import load_labels
from tests.api.conftest import live_server
from tests.monitoring.conftest import ToyCache, write_labels


def _value(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, flags=re.M)
    assert found, f"{name}{{{labels}}} missing from /metrics"
    return float(found.group(1))


def test_metrics_show_age_drift_and_realised_metrics(toy_cache: ToyCache, tmp_path: Path) -> None:
    outcomes = {key: float(score > 0.5) for key, score in toy_cache.scores.items()}
    labels = write_labels(tmp_path / "date=2013-07-01" / "part-0.parquet", outcomes)
    load_labels(toy_cache.settings, model="toy", source=labels.parent.parent, key="id", label="y")
    evaluate(toy_cache.settings, model="toy")
    with live_server(create_app(toy_cache.settings)) as base:
        text = httpx.get(f"{base}/metrics", timeout=30).text
    assert _value(text, "predcache_prediction_age_seconds", 'model="toy"') >= 0
    assert _value(text, "predcache_drift_psi", 'column="x",model="toy"') >= 0
    assert _value(text, "predcache_eval_metric", 'metric="auc",model="toy"') == 1.0
