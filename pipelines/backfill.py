"""Backfills: one run per day over a date range, in order; done days are skipped, a rerun resumes.

The days run one after another in this process, so an engine's per-process state serves them
all: on Spark one session (one driver JVM, its reused Python workers and their ONNX sessions)
scores every day; only the first day pays for starting it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.jobs import RunRequest, RunSummary, run_job
from pipelines.settings import Settings


def days(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end``, both included.

    Raises:
        ConfigError: ``end`` is before ``start``.
    """
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def day_input(template: str, day: date) -> Path:
    """The input path of one day: ``template`` with ``{date}`` replaced by YYYY-MM-DD.

    Raises:
        ConfigError: the template has no ``{date}`` placeholder.
    """
    if "{date}" not in template:
        raise ConfigError(
            f"--input-template '{template}' has no {{date}} placeholder (e.g. 'data/date={{date}}')"
        )
    return Path(template.replace("{date}", day.isoformat()))


def backfill_job(
    settings: Settings,
    *,
    model: str,
    template: str,
    start: date,
    end: date,
    engine: str = "beam",
    version: str | None = None,
    publish_runs: bool = False,
    shard_rows: int | None = None,
    engine_options: dict[str, Any] | None = None,
    on_day: Callable[[date, RunSummary], None] | None = None,
) -> list[RunSummary]:
    """Score each day from ``start`` to ``end`` in order; days already done are skipped.

    A failure stops the backfill with the failing day's error; running it again resumes
    from that day (finished days are skipped, the failed day's run resumes its shards).
    """
    inputs = [(day, day_input(template, day)) for day in days(start, end)]
    summaries = []
    for day, path in inputs:
        request = RunRequest(
            model=model,
            input=path,
            engine=engine,
            version=version,
            shard_rows=shard_rows,
            publish=publish_runs,
            engine_options=dict(engine_options or {}),
        )
        summary = run_job(settings, request)
        summaries.append(summary)
        if on_day is not None:
            on_day(day, summary)
    return summaries
