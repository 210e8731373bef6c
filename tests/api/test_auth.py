"""Optional API keys: X-API-Key is required everywhere except /healthz and /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pipelines.api import create_app
from pipelines.api.routes import key_matches

KEYS = "k-one, k-two"


@pytest.fixture(scope="module")
def client(api_cache, make_api_settings, serve_app, tmp_path_factory) -> Iterator[httpx.Client]:
    settings = make_api_settings(api_cache.url, tmp_path_factory.mktemp("home"), api_keys=KEYS)
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c


def test_lookup_without_a_key_is_401(client) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_lookup_with_a_wrong_key_is_401(client) -> None:
    response = client.post(
        "/v1/models/toy/predictions:batchGet", json={"keys": ["k"]}, headers={"X-API-Key": "k-on"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("key", ["k-one", "k-two"])
def test_each_configured_key_is_accepted(client, api_cache, key: str) -> None:
    response = client.get(f"/v1/models/toy/predictions/{api_cache.keys[0]}", headers={"X-API-Key": key})
    assert response.status_code == 200


def test_metrics_need_a_key_too(client) -> None:
    assert client.get("/metrics").status_code == 401


def test_healthz_and_openapi_stay_open(client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").json()["security"] == [{"ApiKey": []}]


def test_key_match_is_exact() -> None:
    keys = (b"secret",)
    assert key_matches("secret", keys)
    assert not any(key_matches(sent, keys) for sent in (None, "", "secre", "secret ", "SECRET"))
