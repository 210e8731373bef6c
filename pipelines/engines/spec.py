"""The picklable description of a scoring job that engines ship to their workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.shards import Shard


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker process needs; no live objects (it is pickled to workers)."""

    database_url: str
    models_dir: Path
    model: str
    version: str
    signature: str
    run_id: int
    version_id: int
    attempt: int
    key: str
    columns: list[str]
    files: list[Path]
    shards: list[Shard]
    batch_rows: int
    ort_threads: int
    workers: int
    engine_options: dict[str, Any] = field(default_factory=dict)
    #: Test hook: shard ids whose scoring raises (an injected fault), to prove resume works.
    fail_shards: frozenset[str] = frozenset()
