"""Typed settings, read from the environment once at the edge (CLI, API, DAG) and passed inward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.resources import bundled_models_dir

#: The source checkout's models/ folder (editable installs and the Docker image).
DEFAULT_MODELS_DIR = bundled_models_dir()
#: Where the embedded PostgreSQL keeps its data when PREDCACHE_DATABASE_URL is unset.
DEFAULT_HOME = Path.home() / ".predcache"
DEFAULT_SHARD_ROWS = 20_000
DEFAULT_BATCH_ROWS = 8_192
DEFAULT_ORT_THREADS = 1
DEFAULT_MAX_REJECT_FRACTION = 0.2
DEFAULT_BEAM_WAVE_ROWS = 2_500_000
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
        models_dir: Folder with one sub-folder per model (``<name>/<version>/card.json``).
        shard_rows: Upper bound of rows per shard when planning a run.
        batch_rows: Rows per onnxruntime call inside a shard.
        ort_threads: Intra-op threads of each onnxruntime session (one session per process).
        workers: Parallel worker processes of the engine (Beam direct_num_workers).
        max_reject_fraction: A run whose rejected share exceeds this fails its verify step.
        beam_wave_rows: Planned rows per Beam pipeline run; larger runs are scored in waves
            (the DirectRunner holds a shuffle in memory: this bounds peak memory).
        spark_master: Spark master URL (``local[*]`` or ``spark://host:7077``).
        api_keys: Comma-separated API keys for the lookup API; empty means no key required.
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
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, ge=1)
    ort_threads: int = Field(default=DEFAULT_ORT_THREADS, ge=1)
    workers: int = Field(default=2, ge=1)
    max_reject_fraction: float = Field(default=DEFAULT_MAX_REJECT_FRACTION, ge=0.0, le=1.0)
    beam_wave_rows: int = Field(default=DEFAULT_BEAM_WAVE_ROWS, ge=1)
    spark_master: str = "local[*]"
    api_keys: str = ""
    alert_webhook_url: str | None = None
    alert_psi: float = Field(default=DEFAULT_ALERT_PSI, ge=0.0)
    alert_metric_margin: float = Field(default=DEFAULT_ALERT_METRIC_MARGIN, ge=0.0)
    alert_stale_hours: float = Field(default=DEFAULT_ALERT_STALE_HOURS, gt=0.0)
    alert_reject_fraction: float = Field(default=DEFAULT_ALERT_REJECT_FRACTION, ge=0.0, le=1.0)
    alert_min_labels: int = Field(default=DEFAULT_ALERT_MIN_LABELS, ge=1)
    alert_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("database_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def embedded_pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pg"
