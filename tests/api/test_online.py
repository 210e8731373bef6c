"""Online scoring of cache misses: ``predictions:compute`` and batchGet's fallback rows.

The promise under test: an online answer is bit for bit what a batch run stores for the same
inputs (same card, validation, default signature), rejects carry the batch's reasons, and the
API writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.api import create_app
from pipelines.core.card import load_card
from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

DAY = "date=2013-07-02"
CHUNK = 400


def _rows(table: pa.Table, key: str, inputs: list[str]) -> list[dict[str, Any]]:
    """Parquet rows as compute rows: ``key`` plus the model's inputs (and one ignored extra field)."""
    rows = table.select([key, *inputs]).to_pylist()
    return [{"key": row.pop(key), **row, "not_an_input": "ignored"} for row in rows]


def _online_counts(client: httpx.Client) -> tuple[float, float]:
    """(computed, rejected) rows of model toy from /metrics."""
    values = {"computed": 0.0, "rejected": 0.0}
    for line in client.get("/metrics").text.splitlines():
        for status in values:
            if line.startswith(f'predcache_api_online_rows_total{{model="toy",status="{status}"}}'):
                values[status] = float(line.split()[-1])
    return values["computed"], values["rejected"]


def _compute(client: httpx.Client, model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), CHUNK):
        response = client.post(
            f"/v1/models/{model}/predictions:compute", json={"rows": rows[start : start + CHUNK]}
        )
        assert response.status_code == 200, response.text
        out.extend(response.json()["results"])
    return out


@pytest.fixture(scope="module")
def flights_api(
    migrated_url, flights_dir, make_api_settings, serve_app, tmp_path_factory
) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    settings = make_api_settings(migrated_url, tmp_path_factory.mktemp("home"))
    run_job(settings, RunRequest(model="flights_delay", input=flights_dir / DAY, publish=True))
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def toy_settings(migrated_url, make_api_settings, toy_model_builder, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("toy")
    toy_model_builder(root / "models")
    return make_api_settings(migrated_url, root / "home", models_dir=root / "models", workers=2)


@pytest.fixture(scope="module")
def toy_api(toy_settings, serve_app, tmp_path_factory) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    """The API over a cache where toy/1 is published (one run of 20 keys)."""
    source = tmp_path_factory.mktemp("toy_input")
    keys = [f"seen-{i:02d}" for i in range(20)]
    pq.write_table(pa.table({"id": keys, "x": [0.5] * 20, "n": list(range(20))}), source / "part-0.parquet")
    run_job(toy_settings, RunRequest(model="toy", input=source, publish=True))
    with serve_app(create_app(toy_settings)) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


def test_every_row_of_a_real_day_computes_online_what_the_batch_stored(
    flights_api, flights_dir, migrated_url
) -> None:  # type: ignore[no-untyped-def]
    card = load_card(Path(__file__).resolve().parents[2] / "models" / "flights_delay" / "1")
    table = pq.read_table(flights_dir / DAY)
    rows = _rows(table, card.key, card.input_names)
    with connection(migrated_url) as conn:
        stored = {
            k: (s, lab) for k, s, lab in conn.execute("SELECT key, score::float8, label FROM predictions")
        }
        rejected = dict(conn.execute("SELECT key, reason FROM rejects").fetchall())
        before = conn.execute("SELECT count(*) FROM predictions").fetchone()
    results = _compute(flights_api, "flights_delay", rows)
    assert [r["key"] for r in results] == [row["key"] for row in rows]
    computed = {r["key"]: (r["score"], r["label"]) for r in results if r["status"] == "COMPUTED"}
    reasons = {r["key"]: r["reason"] for r in results if r["status"] == "REJECTED"}
    assert computed == stored and reasons == rejected and len(rejected) > 0
    assert {r["source"] for r in results if r["status"] == "COMPUTED"} == {"online"}
    lookup = flights_api.get(f"/v1/models/flights_delay/predictions/{next(iter(stored))}").json()
    online_fields = set(next(r for r in results if r["status"] == "COMPUTED")) - {"status"}
    assert online_fields == set(lookup)
    assert {r["version"] for r in results if r["status"] == "COMPUTED"} == {"1"}
    with connection(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == before


def test_batch_get_answers_misses_with_rows_online_and_hits_from_the_cache(flights_api, flights_dir) -> None:  # type: ignore[no-untyped-def]
    card = load_card(Path(__file__).resolve().parents[2] / "models" / "flights_delay" / "1")
    hit = _rows(pq.read_table(flights_dir / DAY).slice(0, 1), card.key, card.input_names)[0]
    other_day = pq.read_table(flights_dir / "date=2013-07-03")
    miss = next(r for r in _rows(other_day, card.key, card.input_names) if r["temp"] is not None)
    body = {"keys": [hit["key"], miss["key"], "2013-07-03_NO1_JFK"], "rows": [miss]}
    results = flights_api.post("/v1/models/flights_delay/predictions:batchGet", json=body).json()["results"]
    assert [(r["status"], r.get("source")) for r in results] == [
        ("FOUND", "batch"),
        ("COMPUTED", "online"),
        ("NOT_FOUND", None),
    ]
    (alone,) = _compute(flights_api, "flights_delay", [miss])
    assert (results[1]["score"], results[1]["label"]) == (alone["score"], alone["label"])


@pytest.mark.parametrize(
    ("rows", "status", "needle"),
    [
        ([{"key": "a1", "x": 1.0}], 422, "no field 'n'"),
        ([{"key": "a1", "x": "1.0", "n": 1}], 422, "column 'x' has type string"),
        ([{"key": "a1", "x": 1.0, "n": 1.5}], 422, "column 'n' has type double"),
        ([{"key": "a1", "x": 1.0, "n": 1}, {"key": "a1", "x": 2.0, "n": 2}], 422, "repeats the key"),
        ([{"key": f"k{i}", "x": 1.0, "n": 1} for i in range(1001)], 422, "the maximum is 1000"),
        ([{"x": 1.0, "n": 1}], 422, "no string 'key'"),
        ([], 422, "non-empty list"),
    ],
)
def test_bad_compute_rows_get_a_status_and_a_reason(
    api_cache, make_api_settings, serve_app, tmp_path, rows, status, needle
) -> None:  # type: ignore[no-untyped-def]
    settings = make_api_settings(api_cache.url, tmp_path, models_dir=api_cache.models_dir)
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=30) as client:
        response = client.post("/v1/models/toy/predictions:compute", json={"rows": rows})
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


def test_online_rows_are_rejected_with_the_batch_reasons_and_counted(toy_api) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {"key": "new-1", "x": 0.25, "n": 2},
        {"key": "new-2", "x": None, "n": 1},
        {"key": "new-3", "x": float("nan"), "n": 1},
    ]
    before = _online_counts(toy_api)
    response = toy_api.post(
        "/v1/models/toy/predictions:compute",
        content=json.dumps({"rows": rows}),  # NaN as JSON's common extension, as Python sends it
        headers={"content-type": "application/json"},
    )
    results = response.json()["results"]
    unknown = toy_api.post("/v1/models/nope/predictions:compute", json={"rows": rows[:1]})
    after = _online_counts(toy_api)
    assert [(r["status"], r.get("reason")) for r in results] == [
        ("COMPUTED", None),
        ("REJECTED", "feature 'x' is null"),
        ("REJECTED", "feature 'x' is NaN"),
    ]
    assert unknown.status_code == 404
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2)


def test_an_online_answer_equals_what_the_next_batch_run_stores(toy_api, toy_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = [f"fresh-{i:03d}" for i in range(50)]
    table = pa.table({"id": keys, "x": [i / 7 - 3 for i in range(50)], "n": [i % 5 for i in range(50)]})
    rows = _rows(table, "id", ["x", "n"])
    online = _compute(toy_api, "toy", rows)
    source = tmp_path / "fresh"
    source.mkdir()
    pq.write_table(table, source / "part-0.parquet")
    run_job(toy_settings, RunRequest(model="toy", version="1", input=source, shard_rows=20, publish=True))
    looked_up = toy_api.post("/v1/models/toy/predictions:batchGet", json={"keys": keys}).json()["results"]
    assert [(r["score"], r["label"]) for r in online] == [(r["score"], r["label"]) for r in looked_up]
    assert {r["source"] for r in looked_up} == {"batch"}
