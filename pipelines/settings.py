"""Typed settings, read from the environment once at the edge (CLI, API, DAG) and passed inward."""

from __future__ import annotations

from pathlib import Path

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
#: Largest Parquet row group the planner and readers accept (rows); bounds their memory.
DEFAULT_MAX_ROW_GROUP_ROWS = 1_048_576


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
        scratch_uri: Where Beam's read stage leaves each shard's pieces (Arrow IPC) for the score
            stage: a local folder or any pyarrow filesystem URI (``s3://bucket/prefix``) that
            every worker can reach. Unset: ``home/scratch``.
        max_row_group_rows: Inputs whose Parquet row groups hold more rows than this are refused
            (a row group is the smallest unit a reader can stream: it bounds memory).
        spark_master: Spark master URL (``local[*]`` or ``spark://host:7077``).
        api_keys: Comma-separated API keys for the lookup API; empty means no key required.
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
    scratch_uri: str | None = None
    max_row_group_rows: int = Field(default=DEFAULT_MAX_ROW_GROUP_ROWS, ge=1)
    spark_master: str = "local[*]"
    api_keys: str = ""

    @field_validator("database_url", "scratch_uri")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def scratch(self) -> str:
        """The scratch root: ``scratch_uri``, else ``home/scratch``."""
        return self.scratch_uri or str(self.home / "scratch")

    @property
    def embedded_pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pg"
