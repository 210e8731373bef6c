"""Prometheus metrics of one app: requests by route and status, latency, database pool use.

Each app owns its registry (several apps in one process, as in tests, do not collide). With
``--workers N`` every worker process has its own counters: scrape each, or run one worker per
container.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.api.monitoring import MonitoringGauges

#: Lookups take about a millisecond; the buckets resolve 0.25 ms to 2.5 s.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "unmatched"


class _PoolCollector(Collector):
    def __init__(self, sizes: Callable[[], tuple[int, int] | None]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        sizes = self._sizes()
        if sizes is None:
            return
        size, in_use = sizes
        yield GaugeMetricFamily(
            "predcache_api_db_pool_size", "Open database connections in the pool", value=size
        )
        yield GaugeMetricFamily(
            "predcache_api_db_pool_in_use", "Pool connections running a query", value=in_use
        )


class _WaitingCollector(Collector):
    def __init__(self, waiting: Callable[[], int]) -> None:
        self._waiting = waiting

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "predcache_api_online_waiting_requests",
            "Online requests queued for a scoring thread (they join the next coalesced call)",
            value=self._waiting(),
        )


class Metrics:
    """The registry and instruments of one app.

    Args:
        pool_sizes: (open, in use) connections of the database pool, None before it opens.
        online_waiting: online requests queued for a scoring thread.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, pool_sizes: Callable[[], tuple[int, int] | None], online_waiting: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "predcache_api_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "predcache_api_request_duration_seconds",
            "Time from request to the last byte of the response, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lookups = Counter(
            "predcache_api_lookups",
            "Keys looked up in the cache, by model and result (hit, miss)",
            ["model", "result"],
            registry=self.registry,
        )
        self.online = Counter(
            "predcache_api_online_rows",
            "Rows scored online (cache misses answered by the model), by model and status",
            ["model", "status"],
            registry=self.registry,
        )
        self.batches = Counter(
            "predcache_api_online_batches",
            "Online scoring calls: each validates and scores the coalesced rows of one or more requests",
            ["model"],
            registry=self.registry,
        )
        self.batched_requests = Counter(
            "predcache_api_online_batched_requests",
            "Requests answered by online scoring calls (divided by batches: requests per call)",
            ["model"],
            registry=self.registry,
        )
        self.batched_rows = Counter(
            "predcache_api_online_batched_rows",
            "Rows sent to online scoring calls (divided by batches: rows per call)",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(pool_sizes))
        self.registry.register(_WaitingCollector(online_waiting))
        self.monitoring = MonitoringGauges()
        self.registry.register(self.monitoring)

    def count_lookups(self, model: str, *, hits: int, misses: int) -> None:
        if hits:
            self.lookups.labels(model, "hit").inc(hits)
        if misses:
            self.lookups.labels(model, "miss").inc(misses)

    def count_online(self, model: str, results: Iterable[Any]) -> None:
        """Count online results (objects with a ``fields`` attribute: None for a reject)."""
        computed = rejected = 0
        for result in results:
            if result.fields is None:
                rejected += 1
            else:
                computed += 1
        if computed:
            self.online.labels(model, "computed").inc(computed)
        if rejected:
            self.online.labels(model, "rejected").inc(rejected)

    def count_batch(self, model: str, requests: int, rows: int) -> None:
        """One online scoring call for ``requests`` coalesced requests (``rows`` rows in all)."""
        self.batches.labels(model).inc()
        self.batched_requests.labels(model).inc(requests)
        self.batched_rows.labels(model).inc(rows)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware) that times every request.

    The route label is the matched route's template (``/v1/models/{model}/predictions/{key:path}``),
    never the raw path, so keys do not explode the label set.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Iterable[Route]) -> None:
        self.app = app
        self.metrics = metrics
        # The router puts the matched endpoint in the scope (every Starlette version does; only
        # recent ones also put the route): map it back to its template.
        self.templates: dict[Any, str] = {route.endpoint: route.path for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            label = self.templates.get(scope.get("endpoint"), UNMATCHED_ROUTE)
            self.metrics.observe(label, scope["method"], status, time.perf_counter() - started)
