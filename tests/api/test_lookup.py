"""Lookups through the real API (uvicorn on loopback) over real published runs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pipelines.api.validation import MAX_BATCH_KEYS, MAX_BODY_BYTES

BATCH = "/v1/models/toy/predictions:batchGet"


@pytest.fixture(scope="module")
def client(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as c:
        yield c


def _error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_found_key_returns_its_published_prediction(client, api_cache) -> None:
    key = api_cache.keys[7]
    body = client.get(f"/v1/models/toy/predictions/{key}").json()
    assert body["key"] == key and body["model"] == "toy" and body["version"] == "1"
    assert body["score"] == api_cache.scores["1"][key]
    assert set(body) >= {"label", "computed_at"}


def test_unknown_key_is_404_key_not_found(client) -> None:
    response = client.get("/v1/models/toy/predictions/2013-07-01_XX0000_JFK")
    assert response.status_code == 404
    assert _error_code(response) == "KEY_NOT_FOUND"
    assert "key '2013-07-01_XX0000_JFK' not found" in response.json()["error"]["message"]


def test_unknown_model_is_404_model_not_found_naming_served_models(client) -> None:
    response = client.get("/v1/models/nope/predictions/k1")
    assert response.status_code == 404
    assert _error_code(response) == "MODEL_NOT_FOUND"
    assert "models served: toy" in response.json()["error"]["message"]


def test_batch_returns_mixed_results_in_request_order(client, api_cache) -> None:
    keys = [api_cache.keys[3], "missing-1", api_cache.keys[0], api_cache.keys[3], "missing-2"]
    results = client.post(BATCH, json={"keys": keys}).json()["results"]
    assert [r["key"] for r in results] == keys
    assert [r["status"] for r in results] == ["FOUND", "NOT_FOUND", "FOUND", "FOUND", "NOT_FOUND"]
    assert results[2]["score"] == api_cache.scores["1"][keys[2]] and results[2]["version"] == "1"


def test_batch_for_unknown_model_is_404(client) -> None:
    response = client.post("/v1/models/nope/predictions:batchGet", json={"keys": ["k1"]})
    assert response.status_code == 404 and _error_code(response) == "MODEL_NOT_FOUND"


def test_batch_over_the_maximum_is_400_saying_the_limit(client) -> None:
    response = client.post(BATCH, json={"keys": [f"k{i}" for i in range(MAX_BATCH_KEYS + 1)]})
    assert response.status_code == 400
    assert f"the maximum is {MAX_BATCH_KEYS}" in response.json()["error"]["message"]


@pytest.mark.parametrize("key", ["bad key", "semi;colon", "quote'", "x" * 257])
def test_bad_key_is_400_invalid_argument(client, key: str) -> None:
    assert client.get(f"/v1/models/toy/predictions/{key}").status_code == 400
    response = client.post(BATCH, json={"keys": ["ok", key]})
    assert response.status_code == 400 and "keys[1]" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'["k1"]',
        b'{"keys": "k1"}',
        b'{"keys": []}',
        b'{"keys": [1]}',
        b'{"keys": ["a"], "x": 1}',
    ],
)
def test_malformed_batch_body_is_400(client, content: bytes) -> None:
    response = client.post(BATCH, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and _error_code(response) == "INVALID_ARGUMENT"


def test_oversized_body_is_413_before_it_is_read(client) -> None:
    response = client.post(BATCH, content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413 and _error_code(response) == "PAYLOAD_TOO_LARGE"


def test_oversized_chunked_body_is_413(client) -> None:
    chunks = (b"x" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))
    response = client.post(BATCH, content=chunks)
    assert response.status_code == 413


def test_models_lists_active_version_rows_and_freshness(client, api_cache) -> None:
    (model,) = client.get("/v1/models").json()["models"]
    assert (model["model"], model["version"], model["rows"]) == ("toy", "1", len(api_cache.keys))
    assert model["published_at"] and model["age_seconds"] >= 0


def test_unknown_route_is_a_json_404(client) -> None:
    response = client.get("/v2/nothing")
    assert response.status_code == 404 and _error_code(response) == "NOT_FOUND"


def test_healthz_is_ok_while_the_database_answers(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_count_requests_by_route_template_and_show_the_pool(client, api_cache) -> None:
    client.get(f"/v1/models/toy/predictions/{api_cache.keys[0]}")
    text = client.get("/metrics").text
    assert 'route="/v1/models/{model}/predictions/{key:path}",status="200"' in text
    assert "predcache_api_request_duration_seconds_bucket" in text
    assert "predcache_api_db_pool_size" in text and "predcache_api_db_pool_in_use" in text


def test_openapi_document_describes_every_endpoint(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/v1/models",
        "/v1/models/{model}/predictions/{key}",
        "/v1/models/{model}/predictions:batchGet",
        "/v1/models/{model}/predictions:compute",
        "/healthz",
        "/metrics",
    }
