"""What the Airflow DAGs need besides Airflow: their typed config file, the day's input, alerts.

``dags/predcache_dags.yaml`` lists one DAG per model; ``dags/predcache_dags.py`` turns each entry
into a DAG whose tasks call :mod:`pipelines.jobs`. Nothing here imports Airflow, an engine or
onnxruntime, so DAG files stay cheap to parse and this module is testable on its own.

A day's input is ``input_template`` with ``{data_dir}`` and ``{date}`` filled in, through the same
``backfill.day_input`` as ``predcache backfill --input-template``: a day done by either is recognised
(and skipped) by the other.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.errors import ConfigError, first_invalid, flat_message
from pipelines.monitoring.thresholds import Thresholds
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DATA_DIR_PLACEHOLDER = "{data_dir}"
DEFAULT_INPUT_TEMPLATE = "{data_dir}/date={date}"
DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY_SECONDS = 300
DEFAULT_TASK_TIMEOUT_MINUTES = 30
DEFAULT_SCORE_TIMEOUT_MINUTES = 180
DEFAULT_LABELS_TEMPLATE = "{data_dir}/_labels/date={date}"
#: Labels of day D are complete once D's last flight has landed: by the run of D + 2 (it starts at
#: 00:00 UTC of D + 2, a full day after D ended), so evaluation lags scoring by two days.
DEFAULT_EVALUATE_LAG_DAYS = 2
#: Each run re-evaluates this many days ending at D - lag: late labels and a missed run catch up.
DEFAULT_EVALUATE_WINDOW_DAYS = 7
#: Seconds the failure callback waits for the webhook before giving up (it must never hold a worker).
WEBHOOK_TIMEOUT_SECONDS = 5.0


class DagEnv(BaseSettings):
    """The DAG-side settings read from the environment (same ``PREDCACHE_`` prefix as :class:`Settings`).

    Attributes:
        data_dir: Folder the input templates' ``{data_dir}`` stands for; overrides the config file's.
        alert_webhook_url: URL the failure callback posts to; overrides the config file's.
        dags_config: Config file of the DAGs (default: ``predcache_dags.yaml`` beside the DAG file).
    """

    model_config = SettingsConfigDict(env_prefix="PREDCACHE_", extra="ignore")

    data_dir: Path | None = None
    alert_webhook_url: str | None = None
    dags_config: Path | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DagSpec(_Strict):
    """One scheduled DAG: which model scores which daily input, on which engine, with which retry budget."""

    dag_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: str
    version: str | None = None
    engine: Literal["beam", "spark"] = "beam"
    schedule: str = "@daily"
    start_date: date
    catchup: bool = False
    max_active_runs: int = Field(1, ge=1)
    input_template: str = DEFAULT_INPUT_TEMPLATE
    publish: bool = True
    shard_rows: int | None = Field(None, ge=1)
    #: Default of the DAG's ``incremental`` param (rescore only changed and new rows).
    incremental: bool = False
    retries: int = Field(DEFAULT_RETRIES, ge=0)
    retry_delay_seconds: int = Field(DEFAULT_RETRY_DELAY_SECONDS, ge=0)
    task_timeout_minutes: int = Field(DEFAULT_TASK_TIMEOUT_MINUTES, ge=1)
    score_timeout_minutes: int = Field(DEFAULT_SCORE_TIMEOUT_MINUTES, ge=1)
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    labels_template: str | None = DEFAULT_LABELS_TEMPLATE
    labels_key: str | None = None
    labels_column: str = "label"
    evaluate_lag_days: int = Field(DEFAULT_EVALUATE_LAG_DAYS, ge=0)
    evaluate_window_days: int = Field(DEFAULT_EVALUATE_WINDOW_DAYS, ge=1)
    alerts: Thresholds = Thresholds.model_validate({})


class DagsConfig(_Strict):
    """The whole config file: shared values and the list of DAGs."""

    data_dir: Path | None = None
    alert_webhook_url: str | None = None
    dags: list[DagSpec]


def load_dags_config(path: Path) -> DagsConfig:
    """Read and validate the DAG config file (YAML or JSON).

    Raises:
        ConfigError: the file is missing, not YAML, invalid, or lists a dag_id twice.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"DAG config {path} is missing; create it or set PREDCACHE_DAGS_CONFIG") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"DAG config {path} is not valid YAML ({flat_message(exc, limit=200)})") from exc
    try:
        config = DagsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"DAG config {path}: {first_invalid(exc)}; fix the file") from exc
    ids = [spec.dag_id for spec in config.dags]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"DAG config {path} lists a dag_id more than once; make each dag_id unique")
    return config


def run_day(
    *,
    override: str | None,
    logical_date: datetime | None,
    data_interval_start: datetime | None,
    run_after: datetime,
) -> date:
    """The day a DAG run scores: the ``day`` param, else the logical date (= data interval start).

    Manual runs in Airflow 3 may have no logical date; they then score the day they were
    triggered for (``run_after``).

    Raises:
        ConfigError: ``override`` is not a YYYY-MM-DD date.
    """
    if override:
        try:
            return date.fromisoformat(override)
        except ValueError:
            raise ConfigError(f"param day='{override}' is not a date in YYYY-MM-DD form") from None
    for moment in (logical_date, data_interval_start, run_after):
        if moment is not None:
            return moment.date()
    raise ConfigError("the DAG run has no logical date; pass the day to score as the 'day' param")


def day_input_path(template: str, day: date, *, data_dir: Path | None) -> Path:
    """The absolute input path of ``day``: ``{data_dir}``, then ``{date}`` as ``predcache backfill`` does.

    Raises:
        ConfigError: the template uses ``{data_dir}`` but none is configured, or has no ``{date}``.
    """
    from pipelines.backfill import day_input  # pyarrow & co.: only when a task runs, not at DAG parse time

    if DATA_DIR_PLACEHOLDER in template:
        if data_dir is None:
            raise ConfigError(
                f"input template '{template}' uses {DATA_DIR_PLACEHOLDER} but no data dir is set; "
                "set PREDCACHE_DATA_DIR or data_dir in the DAG config"
            )
        template = template.replace(DATA_DIR_PLACEHOLDER, str(data_dir))
    return day_input(template, day).resolve()


def check_partition(settings: Settings, *, model: str, version: str | None, path: Path) -> dict[str, Any]:
    """Check that the day's input exists and matches the model card's schema (fails fast, one line).

    Returns:
        ``{"input": <absolute path>, "files": <n>, "version": <resolved model version>}``.

    Raises:
        PredcacheError: unknown model/version, missing or unreadable input, schema mismatch.
    """
    from pipelines.core.card import load_card
    from pipelines.core.inputs import check_input, list_input_files
    from pipelines.core.model import resolve_version_dir

    card = load_card(resolve_version_dir(settings.models_dir, model, version))
    files = list_input_files(path)
    check_input(files, card)
    return {"input": str(path.resolve()), "files": len(files), "version": card.version}


def task_settings(config: DagsConfig) -> Settings:
    """Settings of a task: the environment's, with the config file's webhook when the environment has none."""
    settings = Settings()
    if settings.alert_webhook_url is None and config.alert_webhook_url:
        settings = settings.model_copy(update={"alert_webhook_url": config.alert_webhook_url})
    return settings


def _card_key(settings: Settings, spec: DagSpec) -> str:
    from pipelines.core.card import load_card
    from pipelines.core.model import resolve_version_dir

    return load_card(resolve_version_dir(settings.models_dir, spec.model, spec.version)).key


def evaluate_days(
    settings: Settings, spec: DagSpec, day: date, *, template: str | None, data_dir: Path | None
) -> dict[str, Any]:
    """The DAG's evaluate step for run day ``day``: load the labels that landed, evaluate, alert.

    Labels of the ``evaluate_window_days`` days ending ``evaluate_lag_days`` before ``day`` are loaded
    when their partition exists (a load is idempotent: unchanged labels stay as they are), then those
    days are evaluated and the realised-metric alerts checked. A day whose labels have not landed is
    no failure: it is evaluated again by the next runs while it stays in their window.

    Returns:
        ``since``, ``until``, days whose labels were found, the window's metrics and alerts fired.
    """
    from datetime import timedelta

    from pipelines.monitoring.alerts import check_evaluations
    from pipelines.monitoring.evaluate import evaluate
    from pipelines.monitoring.labels import load_labels

    until = day - timedelta(days=spec.evaluate_lag_days)
    since = until - timedelta(days=spec.evaluate_window_days - 1)
    landed: list[str] = []
    if template:
        key = spec.labels_key or _card_key(settings, spec)
        current = since
        while current <= until:
            path = day_input_path(template, current, data_dir=data_dir)
            if path.exists():
                load_labels(settings, model=spec.model, source=path, key=key, label=spec.labels_column)
                landed.append(current.isoformat())
            current += timedelta(days=1)
    result = evaluate(settings, model=spec.model, since=since, until=until)
    window = result.scope("all")
    alerts = check_evaluations(settings, spec.model, thresholds=spec.alerts)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "labels_landed": landed,
        "metrics": window[0].metrics if window else {},
        "alerts": [f"{a.condition} {a.subject}" for a in alerts],
    }


def failure_payload(context: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON an alert carries, from an Airflow task context (missing fields become null)."""
    ti = context.get("ti") or context.get("task_instance")
    logical_date = context.get("logical_date")
    error = context.get("exception")
    return {
        "event": "task_failed",
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "logical_date": logical_date.isoformat() if logical_date is not None else None,
        "error": flat_message(error, limit=1000) if error is not None else None,
    }


def notify_failure(context: Mapping[str, Any], *, webhook_url: str | None = None) -> None:
    """Task ``on_failure_callback``: log the failure and POST it to the webhook, if one is configured.

    Never raises: a broken alert channel must not hide the task's own error. The environment's
    ``PREDCACHE_ALERT_WEBHOOK_URL`` wins over ``webhook_url`` (the config file's).
    """
    try:
        payload = failure_payload(context)
        log.error("predcache task failed: %s", json.dumps(payload))
        url = DagEnv().alert_webhook_url or webhook_url
        if url:
            post_json(url, payload)
    except Exception:  # the callback must never raise
        log.exception("predcache failure callback could not report the failure")


def post_json(url: str, payload: Mapping[str, Any], *, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> bool:
    """POST ``payload`` as JSON; True on a 2xx answer, False (logged) on any error or timeout."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (operator-configured URL)
            ok = 200 <= int(response.status) < 300
    except Exception as exc:
        log.warning("alert webhook %s failed: %s", url, exc)
        return False
    if not ok:
        log.warning("alert webhook %s answered HTTP %s", url, response.status)
    return ok
