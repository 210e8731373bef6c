"""The DAGs' config, day resolution and failure alerts (plain Python: no Airflow needed)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.backfill import day_input
from pipelines.dagconfig import day_input_path, load_dags_config, notify_failure, run_day
from pipelines.errors import ConfigError

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "dags" / "predcache_dags.yaml"
DAY = date(2013, 7, 2)
MIDNIGHT = datetime(2013, 7, 2, tzinfo=UTC)


def test_dag_input_of_a_day_is_the_cli_backfill_input(tmp_path: Path) -> None:
    dag_path = day_input_path("{data_dir}/date={date}", DAY, data_dir=tmp_path / "x" / "..")
    assert dag_path == day_input(f"{tmp_path}/date={{date}}", DAY).resolve()
    assert dag_path == tmp_path.resolve() / "date=2013-07-02"


def test_template_using_data_dir_without_one_says_to_set_it() -> None:
    with pytest.raises(ConfigError, match="PREDCACHE_DATA_DIR"):
        day_input_path("{data_dir}/date={date}", DAY, data_dir=None)


def test_day_is_the_param_else_the_logical_date() -> None:
    later = datetime(2013, 8, 1, tzinfo=UTC)
    assert run_day(override=None, logical_date=MIDNIGHT, data_interval_start=None, run_after=later) == DAY
    assert run_day(
        override="2013-07-09", logical_date=MIDNIGHT, data_interval_start=None, run_after=later
    ) == date(2013, 7, 9)
    assert (
        run_day(override=None, logical_date=None, data_interval_start=None, run_after=later) == later.date()
    )


def test_day_param_that_is_not_a_date_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        run_day(override="July 2nd", logical_date=MIDNIGHT, data_interval_start=None, run_after=MIDNIGHT)


def test_shipped_config_defines_the_reference_dag() -> None:
    (spec,) = load_dags_config(SHIPPED_CONFIG).dags
    assert (spec.dag_id, spec.model, spec.start_date, spec.catchup) == (
        "batch_predict_flights_delay",
        "flights_delay",
        date(2013, 7, 1),
        False,
    )


def test_config_listing_a_dag_id_twice_is_rejected(tmp_path: Path) -> None:
    entry = {"dag_id": "d", "model": "m", "start_date": "2013-07-01"}
    (tmp_path / "dags.yaml").write_text(json.dumps({"dags": [entry, entry]}))
    with pytest.raises(ConfigError, match="more than once"):
        load_dags_config(tmp_path / "dags.yaml")


def test_config_with_an_unknown_field_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "dags.yaml").write_text(
        "dags:\n  - {dag_id: d, model: m, start_date: 2013-07-01, shards: 4}\n"
    )
    with pytest.raises(ConfigError, match=r"dags\.0\.shards"):
        load_dags_config(tmp_path / "dags.yaml")


def test_failure_callback_posts_the_failed_task_to_the_webhook(
    webhook: tuple[str, list[dict[str, object]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREDCACHE_ALERT_WEBHOOK_URL", raising=False)
    url, received = webhook
    ti = SimpleNamespace(dag_id="d", task_id="score", run_id="r1", try_number=2)
    notify_failure({"ti": ti, "logical_date": MIDNIGHT, "exception": ValueError("boom")}, webhook_url=url)
    assert received == [
        {
            "event": "task_failed",
            "dag_id": "d",
            "task_id": "score",
            "run_id": "r1",
            "try_number": 2,
            "logical_date": "2013-07-02T00:00:00+00:00",
            "error": "boom",
        }
    ]


def test_failure_callback_never_raises_when_the_webhook_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDCACHE_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/unreachable")
    notify_failure({"ti": None, "exception": RuntimeError("x")})
    notify_failure({})
