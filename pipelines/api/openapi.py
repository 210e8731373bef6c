"""The OpenAPI 3.0 document of the lookup API, written out (Starlette has no generator)."""

from __future__ import annotations

from typing import Any

from pipelines.api.validation import (
    KEY_PATTERN,
    MAX_BATCH_KEYS,
    MAX_BODY_BYTES,
    MAX_COMPUTE_ROWS,
    MODEL_PATTERN,
)
from pipelines.api.versions import ACTIVE_VERSION_TTL_S

API_VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid key, model name or body",
        401: "Missing or invalid X-API-Key (only when API keys are configured)",
        404: "Unknown model (code MODEL_NOT_FOUND) or key (KEY_NOT_FOUND)",
        413: "Request body too large",
        422: "Rows the model cannot take: a missing input, a wrong type, a repeated key, too many rows",
        503: "The cache database is unavailable; retry",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
_PREDICTION_FIELDS: dict[str, Any] = {
    "key": {"type": "string"},
    "score": {"type": "number", "description": "The model's score (float4 in the cache)"},
    "label": {"type": "integer", "nullable": True},
    "model": {"type": "string"},
    "version": {"type": "string", "description": "Model version that computed this prediction"},
    "computed_at": {"type": "string", "format": "date-time"},
    "run_id": {
        "type": "integer",
        "nullable": True,
        "description": "The scoring run that wrote it (null: online)",
    },
    "source": {"type": "string", "enum": ["batch", "online"], "description": "The cache, or computed now"},
    "outputs": {
        "type": "object",
        "nullable": True,
        "description": (
            "Every output of the model: name -> a scalar ([N] and [N, 1] outputs) or a list ([N, K] "
            "outputs); numbers read back to the model's float32/float64 exactly; NaN and infinities "
            'are the strings "NaN", "Infinity", "-Infinity". Null for rows stored before outputs were.'
        ),
        "additionalProperties": True,
    },
}
_ROW = {
    "type": "object",
    "required": ["key"],
    "description": "A key and the model's input columns (other fields are ignored, as in batch runs)",
    "properties": {"key": {"type": "string", "pattern": KEY_PATTERN, "minLength": 1, "maxLength": 256}},
    "additionalProperties": True,
}
_ROWS = {"type": "array", "minItems": 1, "maxItems": MAX_COMPUTE_ROWS, "items": _ROW}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Prediction": {
        "type": "object",
        "required": list(_PREDICTION_FIELDS),
        "properties": _PREDICTION_FIELDS,
    },
    "BatchResult": {
        "type": "object",
        "description": "NOT_FOUND results carry only key and status.",
        "required": ["key", "status"],
        "properties": {
            "status": {"type": "string", "enum": ["FOUND", "NOT_FOUND", "COMPUTED", "REJECTED"]},
            "reason": {"type": "string", "description": "Why a row was rejected (the batch's reject reason)"},
            **_PREDICTION_FIELDS,
        },
    },
    "ComputeRequest": {
        "type": "object",
        "required": ["rows"],
        "additionalProperties": False,
        "properties": {"rows": _ROWS},
    },
    "BatchGetRequest": {
        "type": "object",
        "required": ["keys"],
        "additionalProperties": False,
        "properties": {
            "keys": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_KEYS,
                "items": {"type": "string", "pattern": KEY_PATTERN, "minLength": 1, "maxLength": 256},
            },
            "rows": {**_ROWS, "description": "Inputs of keys that may miss: computed online when they do"},
        },
    },
    "BatchGetResponse": {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "items": _ref("BatchResult")}},
    },
    "Model": {
        "type": "object",
        "required": [
            "model",
            "version",
            "published_at",
            "rows",
            "rows_estimated",
            "newest_computed_at",
            "age_seconds",
        ],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "string", "description": "The active version"},
            "published_at": {"type": "string", "format": "date-time"},
            "rows": {"type": "integer", "description": "Visible predictions (see rows_estimated)"},
            "rows_estimated": {
                "type": "boolean",
                "description": "True: rows is the sum of rows_out of the version's published runs, exact "
                "when they scored disjoint keys (one run per day), an upper bound otherwise",
            },
            "newest_computed_at": _NULLABLE_TIME,
            "age_seconds": {
                "type": "number",
                "nullable": True,
                "description": "Age of the newest prediction",
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": _ref("Model")}},
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
}


def openapi_document(*, api_keys: bool) -> dict[str, Any]:
    """The document served at /openapi.json; ``api_keys`` says whether X-API-Key is required."""
    model_param = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": MODEL_PATTERN},
    }
    key_param = {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "1-256 characters of A-Z a-z 0-9 _ . : @ / + = -",
        "schema": {"type": "string", "pattern": KEY_PATTERN, "minLength": 1, "maxLength": 256},
    }
    secured = _errors(401) if api_keys else {}
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "predcache lookup API",
            "version": API_VERSION,
            "description": "Read batch-computed predictions by key. Every prediction carries model, version "
            'and computed_at. Errors: {"error": {"code", "message"}}.',
        },
        "paths": {
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "Models with an active version, their size and freshness",
                    "responses": {
                        "200": _json(_ref("ModelList"), "Served models"),
                        **secured,
                        **_errors(503),
                    },
                }
            },
            "/v1/models/{model}/predictions/{key}": {
                "get": {
                    "operationId": "getPrediction",
                    "summary": "The current prediction of one key",
                    "parameters": [model_param, key_param],
                    "responses": {
                        "200": _json(_ref("Prediction"), "The prediction"),
                        **secured,
                        **_errors(400, 404, 503),
                    },
                }
            },
            "/v1/models/{model}/predictions:batchGet": {
                "post": {
                    "operationId": "batchGetPredictions",
                    "summary": f"Current predictions of up to {MAX_BATCH_KEYS} keys, in request order",
                    "description": f"Bodies over {MAX_BODY_BYTES} bytes are refused with 413. All results "
                    "come from one snapshot: one version of the model.",
                    "parameters": [model_param],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchGetRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("BatchGetResponse"), "One result per requested key"),
                        **secured,
                        **_errors(400, 404, 413, 422, 503),
                    },
                }
            },
            "/v1/models/{model}/predictions:compute": {
                "post": {
                    "operationId": "computePredictions",
                    "summary": f"Score up to {MAX_COMPUTE_ROWS} rows now with the active version (no write)",
                    "description": "Same card, validation and default signature as the batch runs, so a "
                    "row's result equals what the next batch run stores for the same inputs. The active "
                    f"version is reread at most every {ACTIVE_VERSION_TTL_S:g} s: after a publish or "
                    "rollback, rows may be scored by the previous version for that long. Concurrent "
                    "requests share scoring calls; each keeps its own result or error.",
                    "parameters": [model_param],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ComputeRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("BatchGetResponse"), "One result per row (COMPUTED or REJECTED)"),
                        **secured,
                        **_errors(400, 404, 413, 422, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 when the database answers, 503 when it does not (never needs a key)",
                    "security": [],
                    "responses": {"200": _json(_ref("Health"), "Healthy"), **_errors(503)},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus text format: requests, latency, pool use",
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **secured,
                    },
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
    if api_keys:
        doc["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
        doc["security"] = [{"ApiKey": []}]
    return doc
