"""Coalesced online scoring answers every row exactly as if its request had come alone.

Scorer-level tests use the real flights_delay model (static int8) and real flights rows; the
HTTP test holds the one scoring thread so that what queues behind it is known exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from pipelines.api import create_app
from pipelines.api.errors import UnprocessableRowsError
from pipelines.api.online import OnlineScorer
from pipelines.core.card import load_card

MODELS = Path(__file__).resolve().parents[2] / "models"
FLIGHTS = ("flights_delay", "1")
CONCURRENT = 12
GATE_TIMEOUT_S = 30.0
POLL_S = 0.02
GIVE_UP_S = 2.0


@pytest.fixture(scope="module")
def scorer() -> Iterator[OnlineScorer]:
    online = OnlineScorer(MODELS)
    yield online
    online.close()


@pytest.fixture(scope="module")
def day_rows(flights_dir: Path) -> list[dict[str, Any]]:
    """120 real rows of 2013-07-02 as compute rows; two carry a null and a NaN (rejects)."""
    card = load_card(MODELS / "flights_delay" / "1")
    table = pq.read_table(flights_dir / "date=2013-07-02", columns=[card.key, *card.input_names])
    rows = [{"key": row.pop(card.key), **row} for row in table.drop_null().slice(0, 120).to_pylist()]
    rows[45]["temp"] = None
    rows[95]["humid"] = float("nan")
    return rows


def test_rows_get_the_same_answer_alone_as_in_a_coalesced_call(
    scorer: OnlineScorer, day_rows: list[dict[str, Any]]
) -> None:
    requests = [day_rows[i : i + 1] for i in range(40)] + [day_rows[40:90], day_rows[90:120]]
    _, reader = scorer.model(*FLIGHTS)
    assert [batch.members for batch in reader.read(requests)[0]] == [list(range(42))]
    together = scorer.score(*FLIGHTS, requests)
    alone = [scorer.compute(*FLIGHTS, rows) for rows in requests]
    assert together == alone
    reasons = {c.key: c.reason for answer in alone for c in answer if c.reason}
    assert reasons == {
        day_rows[45]["key"]: "feature 'temp' is null",
        day_rows[95]["key"]: "feature 'humid' is NaN",
    }


def test_a_request_with_a_bad_type_gets_its_own_error_and_never_fails_its_neighbours(
    scorer: OnlineScorer, day_rows: list[dict[str, Any]]
) -> None:
    bad = [{**day_rows[0], "key": "bad-1", "temp": "warm"}]
    answers = scorer.score(*FLIGHTS, [day_rows[1:2], bad, day_rows[2:3]])
    assert isinstance(answers[1], UnprocessableRowsError)
    assert "column 'temp' has type string" in str(answers[1])
    assert [answers[0], answers[2]] == [scorer.compute(*FLIGHTS, day_rows[i : i + 1]) for i in (1, 2)]


def test_one_key_in_two_requests_is_not_a_duplicate_and_each_gets_its_own_answer(
    scorer: OnlineScorer, day_rows: list[dict[str, Any]]
) -> None:
    twin = [{**day_rows[5], "key": day_rows[4]["key"]}]  # same key, another flight's features
    answers = scorer.score(*FLIGHTS, [day_rows[4:5], twin, day_rows[6:7]])
    assert answers == [scorer.compute(*FLIGHTS, rows) for rows in (day_rows[4:5], twin, day_rows[6:7])]
    assert answers[0] != answers[1]
    assert all(c.fields is not None for answer in answers if isinstance(answer, list) for c in answer)


def test_requests_whose_json_types_differ_are_scored_apart_as_if_alone(
    scorer: OnlineScorer, day_rows: list[dict[str, Any]]
) -> None:
    as_float = [{**day_rows[8], "distance": float(day_rows[8]["distance"])}]  # JSON 1400.0, not 1400
    requests = [day_rows[7:8], as_float, day_rows[9:10]]
    _, reader = scorer.model(*FLIGHTS)
    assert [batch.members for batch in reader.read(requests)[0]] == [[0, 2], [1]]
    assert scorer.score(*FLIGHTS, requests) == [scorer.compute(*FLIGHTS, rows) for rows in requests]


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name
    )


def _await_metric(client: httpx.Client, name: str, at_least: float) -> None:
    """Poll /metrics until ``name`` reaches ``at_least`` (what the server did, not how fast)."""
    for _ in range(int(GATE_TIMEOUT_S / POLL_S)):
        if _metric(client.get("/metrics").text, name) >= at_least:
            return
        time.sleep(POLL_S)
    raise AssertionError(f"{name} never reached {at_least}")


def test_concurrent_requests_share_scoring_calls_and_a_client_that_gives_up_breaks_nothing(
    api_cache, make_api_settings, serve_app, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_api_settings(api_cache.url, tmp_path, models_dir=api_cache.models_dir))
    scorer = app.state.runtime.scorer
    gate, score = threading.Event(), scorer.score

    def held(name: str, version: str, requests: list[Any]) -> list[Any]:
        if not gate.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        return score(name, version, requests)

    monkeypatch.setattr(scorer, "score", held)
    url = "/v1/models/toy/predictions:compute"
    bodies = [{"rows": [{"key": f"new-{i}", "x": i / 10, "n": i % 3}]} for i in range(CONCURRENT)]
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            first = pool.submit(httpx.post, base + url, json=bodies[0], timeout=60)
            _await_metric(client, "predcache_api_online_batches_total", 1)  # it holds the scoring thread
            with pytest.raises(httpx.TimeoutException):  # a client that gives up while queued
                httpx.post(base + url, json={"rows": [{"key": "gone", "x": 1.0, "n": 1}]}, timeout=GIVE_UP_S)
            rest = [pool.submit(httpx.post, base + url, json=body, timeout=60) for body in bodies[1:]]
            _await_metric(client, "predcache_api_online_waiting_requests", CONCURRENT)
            gate.set()
            together = [future.result().json()["results"] for future in [first, *rest]]
        text = client.get("/metrics").text
        alone = [client.post(url, json=body).json()["results"] for body in bodies]
    assert _metric(text, "predcache_api_online_batches_total") == 2
    assert _metric(text, "predcache_api_online_batched_requests_total") >= CONCURRENT
    assert [_without_time(answer) for answer in together] == [_without_time(answer) for answer in alone]
    assert {r["status"] for answer in together for r in answer} == {"COMPUTED"}


def _without_time(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "computed_at"} for r in results]
