"""predcache: one daily batch-prediction DAG per model listed in ``predcache_dags.yaml``.

Every run scores one day's partition with the model and publishes it:
``check_input -> plan -> score -> verify -> publish -> observe -> evaluate``. The tasks only
call ``pipelines`` (the same step functions of ``pipelines.jobs`` as ``predcache run`` /
``predcache backfill``); the run ledger in PostgreSQL makes every task safe to retry.

``evaluate`` runs on a lagged window rather than behind a sensor: the run of day D loads the
labels that have landed for days D-lag-6 .. D-lag (lag 2 by default: every flight of D-2 has
landed a full day before D starts) and evaluates those days. A sensor would hold a worker slot
(or need a triggerer) to wait for a partition whose arrival time is known anyway; a missing
partition is no failure here (coverage shows it) and the overlapping window re-evaluates days
whose labels came late, since loading and evaluating are idempotent.

``predcache_maintenance`` runs daily, independent of scoring, and raises the staleness and
realised-metric alerts of every configured model, so a model whose scoring stopped still alerts.

The run for logical date D scores D's partition. With Airflow 3's default timetable for
``@daily`` it starts at 00:00 UTC of D, so the day's flights are scored before they depart;
``airflow backfill create --from-date A --to-date B`` scores the same days as
``predcache backfill --start A --end B``.

``score`` is one task that launches the engine job rather than one mapped task per shard
group: Beam and Spark already spread the shards over their workers inside the job, and a
retried job skips the shards already written (exactly-once per shard), so mapping would
only add per-task start-up (engine, model session) and scheduler load for no extra
parallelism.

Parse time imports only ``airflow.sdk`` and light ``pipelines`` modules; Beam, Spark and
onnxruntime are imported inside the tasks that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from pipelines.dagconfig import (
    DagEnv,
    DagsConfig,
    DagSpec,
    load_dags_config,
    notify_failure,
    task_settings,
)
from pipelines.settings import Settings

CONFIG_FILE = DagEnv().dags_config or Path(__file__).with_name("predcache_dags.yaml")


def _failure_callback(webhook_url: str | None) -> Callable[[Mapping[str, Any]], None]:
    def on_failure(context: Mapping[str, Any]) -> None:
        notify_failure(context, webhook_url=webhook_url)

    return on_failure


def _params(spec: DagSpec) -> dict[str, Param]:
    return {
        "version": Param(
            spec.version, type=["null", "string"], description="Model version; empty: the newest."
        ),
        "engine": Param(spec.engine, type="string", enum=["beam", "spark"], description="Execution engine."),
        "input_template": Param(
            spec.input_template,
            type="string",
            description="Input path of a day: {data_dir} (PREDCACHE_DATA_DIR) and {date} (YYYY-MM-DD).",
        ),
        "day": Param(
            None, type=["null", "string"], description="Day to score (YYYY-MM-DD); empty: the logical date."
        ),
        "publish": Param(spec.publish, type="boolean", description="Publish the run once verified."),
        "incremental": Param(
            spec.incremental,
            type="boolean",
            description="Rescore only new keys and keys whose inputs changed since their current prediction.",
        ),
        "fail_shards": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Test hook: shard ids whose scoring fails.",
        ),
    }


def build_dag(spec: DagSpec, config: DagsConfig) -> DAG:
    """The DAG of one config entry."""
    default_args = {
        "owner": "predcache",
        "retries": spec.retries,
        "retry_delay": timedelta(seconds=spec.retry_delay_seconds),
        "execution_timeout": timedelta(minutes=spec.task_timeout_minutes),
        "on_failure_callback": _failure_callback(config.alert_webhook_url),
    }

    @dag(
        dag_id=spec.dag_id,
        description=spec.description or f"Score {spec.model} day by day into the predcache cache",
        doc_md=__doc__,
        schedule=spec.schedule,
        start_date=datetime.combine(spec.start_date, time(), tzinfo=UTC),
        catchup=spec.catchup,
        max_active_runs=spec.max_active_runs,
        default_args=default_args,
        params=_params(spec),
        tags=["predcache", *spec.tags],
    )
    def predcache_dag() -> None:
        @task
        def check_input() -> dict[str, Any]:
            """Resolve the day's input and check it exists and matches the model card's schema."""
            from pipelines.dagconfig import check_partition, day_input_path, run_day

            context = get_current_context()
            params = context["params"]
            day = run_day(
                override=params.get("day"),
                logical_date=context.get("logical_date"),
                data_interval_start=context.get("data_interval_start"),
                run_after=context["dag_run"].run_after,
            )
            data_dir = DagEnv().data_dir or config.data_dir
            path = day_input_path(params["input_template"], day, data_dir=data_dir)
            checked = check_partition(Settings(), model=spec.model, version=params.get("version"), path=path)
            return {"day": day.isoformat(), **checked}

        @task
        def plan(checked: dict[str, Any]) -> dict[str, Any]:
            """Find or create the run of this model version over this input, with its shard plan."""
            from pipelines.jobs import RunRequest, plan_run

            params = get_current_context()["params"]
            request = RunRequest(
                model=spec.model,
                input=Path(checked["input"]),
                engine=params["engine"],
                version=checked["version"],
                shard_rows=spec.shard_rows,
                incremental=params["incremental"],
            )
            planned = plan_run(Settings(), request)
            return {
                **checked,
                "run_id": planned.run_id,
                "resumed": planned.resumed,
                "finished": planned.finished,
            }

        @task(execution_timeout=timedelta(minutes=spec.score_timeout_minutes))
        def score(planned: dict[str, Any]) -> dict[str, Any]:
            """Score the run's pending shards in one engine job (skipped when the run is already done)."""
            from pipelines.jobs import score_run

            if planned["finished"]:
                return {**planned, "shards_scored": 0}
            params = get_current_context()["params"]
            scored = score_run(
                Settings(),
                planned["run_id"],
                engine=params["engine"],
                fail_shards=frozenset(params.get("fail_shards") or ()),
            )
            return {**planned, "shards_scored": scored}

        @task
        def verify(scored: dict[str, Any]) -> dict[str, Any]:
            """Every planned shard done and rows_out + rows_rejected == rows_in; marks the run verified."""
            from pipelines.jobs import verify_run

            run = verify_run(Settings(), scored["run_id"])
            return {
                **scored,
                "rows_in": run.rows_in,
                "rows_out": run.rows_out,
                "rows_rejected": run.rows_rejected,
            }

        @task
        def publish(verified: dict[str, Any]) -> dict[str, Any]:
            """Make the run's rows visible (and its version active) in one transaction."""
            from pipelines.jobs import publish_run

            if not get_current_context()["params"]["publish"]:
                return {**verified, "published_now": False}
            # False when the run was already published (e.g. the same day by `predcache backfill`).
            return {**verified, "published_now": publish_run(Settings(), verified["run_id"])}

        @task
        def observe(published: dict[str, Any]) -> dict[str, Any]:
            """Store the run's statistics and drift from the card's reference; raise drift/reject alerts."""
            from pipelines.jobs import observe_step

            observed = observe_step(task_settings(config), published["run_id"], thresholds=spec.alerts)
            assert observed is not None
            return {
                **published,
                "drift": observed["drift"],
                "drifted": observed["drifted"],
                "alerts": observed["alerts"],
            }

        @task
        def evaluate(observed: dict[str, Any]) -> dict[str, Any]:
            """Load the labels that landed for the lagged window, evaluate it, raise metric alerts."""
            from datetime import date

            from pipelines.dagconfig import evaluate_days

            result = evaluate_days(
                task_settings(config),
                spec,
                date.fromisoformat(observed["day"]),
                template=spec.labels_template,
                data_dir=DagEnv().data_dir or config.data_dir,
            )
            return {"run_id": observed["run_id"], **result}

        evaluate(observe(publish(verify(score(plan(check_input()))))))

    return predcache_dag()


#: Once a day, whether or not any model scored: retention (PREDCACHE_GC_KEEP_VERSIONS,
#: PREDCACHE_GC_KEEP_DAYS) and the staleness and realised-metric alerts of every model.
MAINTENANCE_DAG_ID = "predcache_maintenance"
MAINTENANCE_START = datetime(2024, 1, 1, tzinfo=UTC)


def build_maintenance_dag(config: DagsConfig) -> DAG:
    """The daily maintenance DAG: `predcache gc` over the cache, and every model's staleness and
    realised-metric alerts (even on days without a scoring run)."""

    @dag(
        dag_id=MAINTENANCE_DAG_ID,
        description="Daily retention (predcache gc) and staleness/metric alerts of every model",
        doc_md=__doc__,
        schedule="@daily",
        start_date=MAINTENANCE_START,
        catchup=False,
        max_active_runs=1,
        default_args={
            "owner": "predcache",
            "retries": 2,
            "retry_delay": timedelta(minutes=10),
            "on_failure_callback": _failure_callback(config.alert_webhook_url),
        },
        tags=["predcache", "maintenance"],
    )
    def maintenance_dag() -> None:
        @task
        def gc() -> dict[str, Any]:
            """Delete unpublished, failed and superseded runs; drop versions outside the rollback window."""
            from pipelines.store.cache import cache_url
            from pipelines.store.db import connection
            from pipelines.store.retention import collect_garbage

            settings = Settings()
            with connection(cache_url(settings), autocommit=True) as conn:
                result = collect_garbage(
                    conn, keep_versions=settings.gc_keep_versions, keep_days=settings.gc_keep_days
                )
            return {
                "runs_deleted": len(result.runs),
                "predictions_deleted": result.predictions_deleted,
                "versions_dropped": [f"{m}/{v}" for m, v in result.dropped_versions],
            }

        @task
        def alerts() -> dict[str, list[str]]:
            """Fire each model's staleness and metric alerts (once per condition and subject)."""
            from pipelines.monitoring.alerts import check_evaluations, check_staleness

            settings = task_settings(config)
            fired: dict[str, list[str]] = {}
            for spec in config.dags:
                found = check_staleness(settings, spec.model, thresholds=spec.alerts)
                found += check_evaluations(settings, spec.model, thresholds=spec.alerts)
                fired[spec.model] = [f"{a.condition} {a.subject}" for a in found]
            return fired

        gc()
        alerts()

    return maintenance_dag()


for _spec in (_config := load_dags_config(CONFIG_FILE)).dags:
    globals()[_spec.dag_id] = build_dag(_spec, _config)
globals()[MAINTENANCE_DAG_ID] = build_maintenance_dag(_config)
