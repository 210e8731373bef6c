"""The reference model end to end: a real day of flights scored by flights_delay, read over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.api import create_app
from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

DAY = "date=2013-07-01"


@pytest.fixture(scope="module")
def flights_api(
    migrated_url, flights_dir, make_api_settings, serve_app, tmp_path_factory
) -> Iterator[httpx.Client]:
    home: Path = tmp_path_factory.mktemp("home")
    settings = make_api_settings(migrated_url, home)
    run_job(settings, RunRequest(model="flights_delay", input=flights_dir / DAY, publish=True))
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


def test_a_real_flight_key_returns_its_stored_delay_probability(flights_api, migrated_url) -> None:
    with connection(migrated_url) as conn:
        [(key, score)] = conn.execute(
            "SELECT key, score::float8 FROM predictions ORDER BY key LIMIT 1"
        ).fetchall()
    body = flights_api.get(f"/v1/models/flights_delay/predictions/{key}").json()
    assert (body["key"], body["score"], body["version"]) == (key, score, "1")
    assert 0.0 <= body["score"] <= 1.0 and body["label"] in (0, 1)


def test_models_reports_the_day_of_flights(flights_api, migrated_url) -> None:
    with connection(migrated_url) as conn:
        [(stored,)] = conn.execute("SELECT count(*) FROM predictions").fetchall()
    (model,) = flights_api.get("/v1/models").json()["models"]
    assert (model["model"], model["rows"]) == ("flights_delay", stored)
