"""Monitoring gauges on ``/metrics``, read from the database with a short cache.

``predcache_prediction_age_seconds{model}``: age of the active version's newest published run;
``predcache_drift_psi{model,column}``: PSI of each input and output in the model's newest observed
run; ``predcache_eval_metric{model,metric}``: the newest evaluated week's realised metrics.
Three small queries run at most once per ``ttl`` seconds, so scrapes stay cheap; a failed refresh
keeps the previous values (and the request metrics still render).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipelines.api.reader import ReadStore

DEFAULT_TTL_SECONDS = 15.0
_log = logging.getLogger("pipelines.api")

# The views of sql/011: the API's login reads these aggregates, not the tables behind them.
AGE_QUERY = "SELECT model, age FROM monitoring_age"
DRIFT_QUERY = "SELECT model, drift FROM monitoring_drift"
EVAL_QUERY = "SELECT model, metrics FROM monitoring_metrics"


class MonitoringGauges(Collector):
    """A collector whose values ``refresh`` reloads from the database when older than ``ttl``."""

    def __init__(self, *, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._loaded_at = float("-inf")
        self._age: list[tuple[str, float]] = []
        self._drift: list[tuple[str, str, float]] = []
        self._metrics: list[tuple[str, str, float]] = []

    async def refresh(self, store: ReadStore) -> None:
        """Reload the values if the cache expired (errors are logged; old values are kept)."""
        if time.monotonic() - self._loaded_at < self.ttl:
            return
        self._loaded_at = time.monotonic()
        try:
            age = await store.fetch(AGE_QUERY)
            drift = await store.fetch(DRIFT_QUERY)
            evaluated = await store.fetch(EVAL_QUERY)
        except Exception as exc:  # a scrape must still answer with the request metrics
            _log.warning("monitoring gauges not refreshed: %s", exc)
            return
        self._age = [(row["model"], float(row["age"])) for row in age]
        self._drift = [
            (row["model"], column, float(psi))
            for row in drift
            for column, psi in json.loads(row["drift"]).items()
        ]
        self._metrics = [
            (row["model"], name, float(value))
            for row in evaluated
            for name, value in json.loads(row["metrics"]).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "predcache_prediction_age_seconds",
            "Seconds since the active version's newest published run",
            labels=["model"],
        )
        for model, seconds in self._age:
            age.add_metric([model], seconds)
        drift = GaugeMetricFamily(
            "predcache_drift_psi",
            "PSI against the card's reference in the newest observed run",
            labels=["model", "column"],
        )
        for model, column, psi in self._drift:
            drift.add_metric([model, column], psi)
        metric = GaugeMetricFamily(
            "predcache_eval_metric",
            "Realised metric of the newest evaluated week",
            labels=["model", "metric"],
        )
        for model, name, value in self._metrics:
            metric.add_metric([model, name], value)
        yield from (age, drift, metric)
