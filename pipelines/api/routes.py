"""The endpoints. Each one raises pipelines errors; pipelines.api.errors.handle_error answers them."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.api.errors import (
    AuthError,
    KeyNotFoundError,
    ModelNotServedError,
    PayloadTooLargeError,
    RequestError,
)
from pipelines.api.metrics import Metrics
from pipelines.api.online import Computed, OnlineScorer, now_text
from pipelines.api.reader import ReadStore
from pipelines.api.validation import MAX_BODY_BYTES, check_key, check_model, parse_batch, parse_compute
from pipelines.api.versions import ActiveVersions

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Runtime:
    """What the endpoints share: set up by create_app, the store and versions filled in by the lifespan."""

    api_keys: tuple[bytes, ...]
    metrics: Metrics
    openapi: dict[str, Any]
    scorer: OnlineScorer | None = None
    store: ReadStore | None = None
    versions: ActiveVersions | None = None


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _store(request: Request) -> ReadStore:
    store = _runtime(request).store
    if store is None:  # a request outside the lifespan (an ASGI server without lifespan support)
        raise RuntimeError("the app's lifespan did not run; serve it with lifespan enabled")
    return store


def key_matches(sent: str | None, keys: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    if sent is None:
        return False
    candidate = sent.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


def protected(endpoint: Endpoint) -> Endpoint:
    """Require a valid X-API-Key when keys are configured."""

    async def guarded(request: Request) -> Response:
        keys = _runtime(request).api_keys
        if keys and not key_matches(request.headers.get("x-api-key"), keys):
            raise AuthError()
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused early (before reading) when Content-Length exceeds ``limit``.

    Raises:
        PayloadTooLargeError: declared or actual size above ``limit``.
        RequestError: an unreadable Content-Length.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # chunked bodies have no Content-Length: count as we read
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def prediction_json(
    model: str, row: asyncpg.Record, times: dict[datetime, str] | None = None
) -> dict[str, Any]:
    """A prediction as JSON.

    ``times`` memoizes isoformat(): a shard's rows share one computed_at (its transaction's
    now()), so the rows of a batch have only a few distinct values.
    """
    computed_at: datetime = row["computed_at"]
    cached = times.get(computed_at) if times is not None else None
    text = cached if cached is not None else computed_at.isoformat()
    if times is not None and cached is None:
        times[computed_at] = text
    return {
        "key": row["key"],
        "score": row["score"],
        "label": row["label"],
        "model": model,
        "version": row["version"],
        "computed_at": text,
        "run_id": row["run_id"],
        "outputs": _outputs(row["outputs"]),
        "source": "batch",
    }


def computed_json(model: str, version: str, computed: Computed, computed_at: str) -> dict[str, Any]:
    """An online result as JSON: a lookup's fields with ``source: online``, or a reject with its reason."""
    if computed.fields is None:
        return {"key": computed.key, "status": "REJECTED", "reason": computed.reason}
    return {
        "key": computed.key,
        "status": "COMPUTED",
        **computed.fields,
        "model": model,
        "version": version,
        "computed_at": computed_at,
        "run_id": None,
        "source": "online",
    }


async def _online_version(request: Request, model: str) -> str | None:
    """The version online scoring uses: the active one, read at most once per ACTIVE_VERSION_TTL_S."""
    versions = _runtime(request).versions
    if versions is None:
        raise RuntimeError("the app's lifespan did not run; serve it with lifespan enabled")
    return await versions.get(model)


def _scorer(request: Request) -> OnlineScorer:
    scorer = _runtime(request).scorer
    if scorer is None:
        raise RuntimeError("online scoring is not configured in this app")
    return scorer


async def _compute(
    request: Request, model: str, version: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    computed = await _scorer(request).compute_async(model, version, rows)
    _runtime(request).metrics.count_online(model, computed)
    at = now_text()
    return [computed_json(model, version, one, at) for one in computed]


def _outputs(value: str | None) -> Any:
    """The stored outputs object (asyncpg hands jsonb over as its text)."""
    return json.loads(value) if value is not None else None


async def _unknown_model(store: ReadStore, model: str) -> ModelNotServedError:
    return ModelNotServedError(model, available=await store.served_models())


@protected
async def get_prediction(request: Request) -> Response:
    """GET /v1/models/{model}/predictions/{key}"""
    model = check_model(request.path_params["model"])
    key = check_key(request.path_params["key"])
    store = _store(request)
    row = (await store.lookup(model, [key])).get(key)
    _runtime(request).metrics.count_lookups(model, hits=int(row is not None), misses=int(row is None))
    if row is None:
        if not await store.model_served(model):
            raise await _unknown_model(store, model)
        raise KeyNotFoundError(model, key)
    return JSONResponse(prediction_json(model, row))


@protected
async def batch_get(request: Request) -> Response:
    """POST /v1/models/{model}/predictions:batchGet (misses with ``rows`` are computed online)"""
    model = check_model(request.path_params["model"])
    batch = parse_batch(await read_body(request))
    store = _store(request)
    found = await store.lookup(model, list(dict.fromkeys(batch.keys)))
    version = None
    if not found:
        version = await _online_version(request, model)
        if version is None:
            raise await _unknown_model(store, model)
    metrics = _runtime(request).metrics
    metrics.count_lookups(
        model,
        hits=sum(key in found for key in batch.keys),
        misses=sum(key not in found for key in batch.keys),
    )
    missing = [batch.rows[key] for key in dict.fromkeys(batch.keys) if key not in found and key in batch.rows]
    online: dict[str, dict[str, Any]] = {}
    if missing:
        # The version the cache answered with (one snapshot), else the active one.
        version = next(iter(found.values()))["version"] if found else version
        assert version is not None
        online = {result["key"]: result for result in await _compute(request, model, version, missing)}
    results = []
    times: dict[datetime, str] = {}
    for key in batch.keys:
        row = found.get(key)
        if row is not None:
            results.append({"key": key, "status": "FOUND", **prediction_json(model, row, times)})
        elif key in online:
            results.append(online[key])
        else:
            results.append({"key": key, "status": "NOT_FOUND"})
    return JSONResponse({"results": results})


@protected
async def compute(request: Request) -> Response:
    """POST /v1/models/{model}/predictions:compute"""
    model = check_model(request.path_params["model"])
    rows = parse_compute(await read_body(request))
    version = await _online_version(request, model)
    if version is None:
        raise await _unknown_model(_store(request), model)
    return JSONResponse({"results": await _compute(request, model, version, rows)})


@protected
async def list_models(request: Request) -> Response:
    """GET /v1/models"""
    models = await _store(request).models()
    return JSONResponse(
        {
            "models": [
                {
                    "model": m.model,
                    "version": m.version,
                    "published_at": m.published_at.isoformat(),
                    "rows": m.rows,
                    "rows_estimated": True,
                    "newest_computed_at": m.newest_computed_at.isoformat() if m.newest_computed_at else None,
                    "age_seconds": None if m.age_seconds is None else round(m.age_seconds, 3),
                }
                for m in models
            ]
        }
    )


async def healthz(request: Request) -> Response:
    """GET /healthz: open even when API keys are configured."""
    await _store(request).ping()
    return JSONResponse({"status": "ok"})


@protected
async def metrics(request: Request) -> Response:
    """GET /metrics"""
    runtime = _runtime(request)
    if runtime.store is not None:
        await runtime.metrics.monitoring.refresh(runtime.store)
    return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)


async def openapi(request: Request) -> Response:
    """GET /openapi.json: open, it holds no data."""
    return JSONResponse(_runtime(request).openapi)


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model}/predictions:batchGet", batch_get, methods=["POST"]),
    Route("/v1/models/{model}/predictions:compute", compute, methods=["POST"]),
    Route("/v1/models/{model}/predictions/{key:path}", get_prediction, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
