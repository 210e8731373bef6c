"""Typed settings, read from the environment once at the edge (CLI, API, DAG) and passed inward."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.resources import bundled_models_dir, default_models_dir, in_checkout, seed_models

#: The models that ship with predcache (a checkout's models/, else the installed package's copy).
DEFAULT_MODELS_DIR = bundled_models_dir()
#: Where the embedded PostgreSQL keeps its data when PREDCACHE_DATABASE_URL is unset.
DEFAULT_HOME = Path.home() / ".predcache"
DEFAULT_SHARD_ROWS = 20_000
DEFAULT_BATCH_ROWS = 8_192
DEFAULT_ORT_THREADS = 1
DEFAULT_MAX_REJECT_FRACTION = 0.2
#: Retention (`predcache gc`): newest versions per model whose partitions are always kept.
DEFAULT_GC_KEEP_VERSIONS = 2
#: Retention: the rollback window in days (publishes and runs younger than this are kept).
DEFAULT_GC_KEEP_DAYS = 7.0
DEFAULT_LEASE_SECONDS = 60
#: Largest Parquet row group the planner and readers accept (rows); bounds their memory.
DEFAULT_MAX_ROW_GROUP_ROWS = 1_048_576
DEFAULT_ALERT_PSI = 0.25
DEFAULT_ALERT_METRIC_MARGIN = 0.05
DEFAULT_ALERT_STALE_HOURS = 36.0
DEFAULT_ALERT_REJECT_FRACTION = 0.05
DEFAULT_ALERT_MIN_LABELS = 200


class Settings(BaseSettings):
    """Every knob predcache reads from the environment (prefix ``PREDCACHE_``).

    Attributes:
        database_url: PostgreSQL URL of the cache. Unset: an embedded server under ``home``.
        home: Folder for local state (the embedded server's data directory lives in ``home/pg``).
        models_dir: Folder with one sub-folder per model (``<name>/<version>/card.json``). Unset: a
            checkout's ``models/``; an installed predcache uses ``home/models``, seeded with the
            bundled reference model on first use.
        shard_rows: Upper bound of rows per shard when planning a run.
        max_shards: Unless ``shard_rows`` is given (``--shard-rows``, ``PREDCACHE_SHARD_ROWS``), a
            large input gets larger shards so that it has at most this many: each read task
            writes one piece per shard, so more shards mean more, smaller files (at 30M rows and
            20,000-row shards, 172,000 pieces of 175 rows).
        batch_rows: Rows per onnxruntime call inside a shard.
        ort_threads: Intra-op threads of each onnxruntime session (one session per process).
        workers: Parallel worker processes of the engine (Beam direct_num_workers).
        max_reject_fraction: A run whose rejected share exceeds this fails its verify step.
        beam_running_mode: The DirectRunner's mode: ``auto`` (one thread for runs of at most
            50,000 rows, else ``multi_threading``), or ``in_memory``, ``multi_threading``,
            ``multi_processing`` (worker processes) for every run.
        scratch_uri: Where Beam's read stage leaves each shard's pieces (Arrow IPC) for the score
            stage: a local folder or any pyarrow filesystem URI (``s3://bucket/prefix``) that
            every worker can reach. Unset: ``home/scratch``.
        max_row_group_rows: Inputs whose Parquet row groups hold more rows than this are refused
            (a row group is the smallest unit a reader can stream: it bounds memory).
        spark_master: Spark master URL (``local[*]`` or ``spark://host:7077``).
        api_keys: Comma-separated API keys for the lookup API; empty means no key required.
        api_database_url: PostgreSQL URL the lookup API logs in with (the SELECT-only
            ``predcache_api`` role). Unset: derived from ``database_url`` (or the embedded
            server) with the role's password (``api_db_password``, or the one ``db migrate``
            generated and stored in ``home/api_db_password``).
        api_db_password: Password ``db migrate`` gives the ``predcache_api`` role. Unset: a
            generated one, kept in ``home/api_db_password`` (mode 0600).
        gc_keep_versions: `predcache gc`: newest versions per model whose partitions are kept.
        gc_keep_days: `predcache gc`: rollback window in days; younger runs and publishes are kept.
        lease_seconds: How long a scoring run's lease holds without a heartbeat (beats come
            every third of it); a run whose owner died is resumable by others after this.
        alert_webhook_url: URL monitoring alerts (drift, rejects, metric, staleness) are POSTed to.
        alert_psi: PSI of an input or of the score above which a run raises a drift alert.
        alert_metric_margin: A realised metric this far worse than the card's holdout figure alerts.
        alert_stale_hours: The active version's newest publish older than this alerts (staleness).
        alert_reject_fraction: A run rejecting a larger share of its rows alerts.
        alert_min_labels: Runs with fewer matched labels are not judged on their realised metric.
        alert_overrides: Per-model thresholds as JSON, e.g.
            ``{"flights_delay": {"psi": 0.3, "drift_ignore": ["day_of_week"]}}``.
    """

    model_config = SettingsConfigDict(env_prefix="PREDCACHE_", extra="forbid")

    database_url: str | None = None
    home: Path = DEFAULT_HOME
    models_dir: Path = DEFAULT_MODELS_DIR
    shard_rows: int = Field(default=DEFAULT_SHARD_ROWS, ge=1)
    max_shards: int = Field(default=512, ge=1)
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, ge=1)
    ort_threads: int = Field(default=DEFAULT_ORT_THREADS, ge=1)
    workers: int = Field(default=2, ge=1)
    max_reject_fraction: float = Field(default=DEFAULT_MAX_REJECT_FRACTION, ge=0.0, le=1.0)
    beam_running_mode: Literal["auto", "in_memory", "multi_threading", "multi_processing"] = "auto"
    scratch_uri: str | None = None
    max_row_group_rows: int = Field(default=DEFAULT_MAX_ROW_GROUP_ROWS, ge=1)
    spark_master: str = "local[*]"
    api_keys: str = ""
    api_database_url: str | None = None
    api_db_password: str | None = None
    gc_keep_versions: int = Field(default=DEFAULT_GC_KEEP_VERSIONS, ge=1)
    gc_keep_days: float = Field(default=DEFAULT_GC_KEEP_DAYS, ge=0.0)
    lease_seconds: int = Field(default=DEFAULT_LEASE_SECONDS, ge=3)
    alert_webhook_url: str | None = None
    alert_psi: float = Field(default=DEFAULT_ALERT_PSI, ge=0.0)
    alert_metric_margin: float = Field(default=DEFAULT_ALERT_METRIC_MARGIN, ge=0.0)
    alert_stale_hours: float = Field(default=DEFAULT_ALERT_STALE_HOURS, gt=0.0)
    alert_reject_fraction: float = Field(default=DEFAULT_ALERT_REJECT_FRACTION, ge=0.0, le=1.0)
    alert_min_labels: int = Field(default=DEFAULT_ALERT_MIN_LABELS, ge=1)
    alert_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("database_url", "api_database_url", "api_db_password", "scratch_uri")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _models_dir_beside_home(self) -> Settings:
        if "models_dir" not in self.model_fields_set:
            self.models_dir = default_models_dir(self.home)
            if not in_checkout():
                seed_models(self.models_dir)
        return self

    @property
    def scratch(self) -> str:
        """The scratch root: ``scratch_uri``, else ``home/scratch``."""
        return self.scratch_uri or str(self.home / "scratch")

    @property
    def embedded_pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pg"
