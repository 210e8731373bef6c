"""The app factory: routes, the one error handler, metrics, and a pool owned by the lifespan.

Starlette rather than FastAPI: measured here (uvicorn, one worker, 32 keep-alive connections
from aiohttp, a trivial JSON endpoint) Starlette served ~4.0-4.5k req/s, FastAPI ~2.2-2.4k
with a dict return (validation + jsonable_encoder) and ~2.9-3.3k returning a JSONResponse.
On a 2-core box that headroom is the API's share of the CPU, so the OpenAPI document that
FastAPI would generate is written out in pipelines/api/openapi.py instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from pipelines.api.errors import handle_error
from pipelines.api.metrics import Metrics, MetricsMiddleware
from pipelines.api.online import OnlineScorer
from pipelines.api.openapi import openapi_document
from pipelines.api.reader import DEFAULT_POOL_SIZE, ReadStore, open_pool
from pipelines.api.routes import ROUTES, Runtime
from pipelines.api.versions import ActiveVersions
from pipelines.errors import PredcacheError
from pipelines.settings import Settings
from pipelines.store.db import connection, resolve_url
from pipelines.store.roles import prepare_api_login
from pipelines.store.schema import require_head

POOL_CLOSE_TIMEOUT_S = 10.0
#: Threads that run online scoring calls in one API process.
ONLINE_SCORING_THREADS = 1
_log = logging.getLogger("pipelines.api")


def parse_api_keys(text: str) -> tuple[bytes, ...]:
    """``PREDCACHE_API_KEYS`` (comma-separated) as the keys to accept; empty: no key required."""
    return tuple(part.strip().encode() for part in text.split(",") if part.strip())


def prepare_database(settings: Settings) -> str:
    """The URL the API reads with: ``PREDCACHE_API_DATABASE_URL``, or one derived with zero set-up.

    The API never changes the schema (`predcache db migrate` does): it checks the schema is
    current, then, for the derived URL, logs in as the SELECT-only ``predcache_api`` role with its
    configured or generated password (set on the role by the owner's connection).

    Raises:
        MigrationError: the schema is not at the newest migration (the message says what to run).
    """
    if settings.api_database_url:
        return settings.api_database_url
    owner_url = resolve_url(settings.database_url, settings.embedded_pgdata)
    require_head(owner_url)
    with connection(owner_url) as conn:
        url, _ = prepare_api_login(conn, settings, owner_url)
    return url


def create_app(settings: Settings, *, pool_size: int = DEFAULT_POOL_SIZE) -> Starlette:
    """Build the lookup API for ``settings``; the database pool opens when the app's lifespan starts.

    Args:
        settings: database URL (or embedded server home) and API keys.
        pool_size: connections in the pool (all opened at start-up).

    Returns:
        An ASGI app (serve it with lifespan enabled, e.g. uvicorn).
    """

    def pool_sizes() -> tuple[int, int] | None:
        return runtime.store.pool_sizes() if runtime.store is not None else None

    def online_waiting() -> int:
        return runtime.scorer.waiting() if runtime.scorer is not None else 0

    metrics = Metrics(pool_sizes, online_waiting)
    api_keys = parse_api_keys(settings.api_keys)
    runtime = Runtime(
        api_keys=api_keys,
        metrics=metrics,
        openapi=openapi_document(api_keys=bool(api_keys)),
        # One scoring thread per API process (concurrent requests share its calls: see
        # pipelines.api.batcher) with settings.ort_threads intra-op threads, the budget each batch
        # worker gets: lookups keep the rest of the CPU.
        scorer=OnlineScorer(
            settings.models_dir,
            threads=settings.ort_threads,
            workers=ONLINE_SCORING_THREADS,
            batch_rows=settings.batch_rows,
            observe=metrics.count_batch,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = await asyncio.to_thread(prepare_database, settings)
        pool = await open_pool(url, size=pool_size)
        runtime.store = ReadStore(pool)
        runtime.versions = ActiveVersions(runtime.store.active_version)
        try:
            yield
        finally:
            runtime.store = None
            runtime.versions = None
            if runtime.scorer is not None:
                runtime.scorer.close()
            try:
                await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
            except TimeoutError:
                _log.warning("database pool did not close within %s s; terminating it", POOL_CLOSE_TIMEOUT_S)
                pool.terminate()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics, routes=ROUTES)],
        exception_handlers={
            Exception: handle_error,
            HTTPException: handle_error,
            PredcacheError: handle_error,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
