"""Incremental refresh, the planner's side: compare the snapshot with its basis, hand the engine the rest.

``plan_refresh`` runs before the planning transaction (it reads the whole snapshot once, see
``core.changes``); the rows to score go to one Parquet file under ``$PREDCACHE_HOME/incremental``
that the engine reads instead of the snapshot, and the pairs of the unchanged rows (plus, without
``--prune-missing``, those of keys absent from the snapshot, whose predictions stay current) are
stored with the run. The comparison is deterministic given the basis run, so a resumed run whose
file was lost gets the same rows again (``engine_files``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow.parquet as pq

from pipelines.core.card import Card
from pipelines.core.changes import PAIR, Basis, Changes, find_changes, scan_pool, sort_pairs
from pipelines.core.inputs import KEY_BATCH_ROWS
from pipelines.core.model import Model
from pipelines.core.stats import column_stats, merge_stats
from pipelines.core.validate import good_rows
from pipelines.errors import InputError, StoreError, one_line
from pipelines.settings import Settings
from pipelines.store.db import connection
from pipelines.store.incremental import basis_run, load_pairs, write_carried
from pipelines.store.ledger import RunRecord, carried_pairs_stored


@dataclass(frozen=True)
class RefreshPlan:
    """What the planner decided for an incremental run (before the run exists)."""

    basis_run_id: int | None
    #: The rows to score (key and model inputs as read), not yet named after the run.
    file: Path
    #: Pairs the run stores as carried over (its unchanged rows, and absent keys unless pruned).
    carried: np.ndarray
    rows_unchanged: int
    #: Statistics of every valid input row (unchanged and forwarded), as ``observe`` takes them.
    input_stats: dict[str, Any] | None


def _folder(settings: Settings) -> Path:
    folder = settings.home / "incremental"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_file(settings: Settings, run_id: int) -> Path:
    """Where the rows an incremental run scores live while it runs."""
    return _folder(settings) / f"run-{run_id}.parquet"


def version_id(conn: psycopg.Connection[Any], model: Model) -> int | None:
    """The cache's id of the model version, if any run of it was planned."""
    row = conn.execute(
        "SELECT version_id FROM model_versions WHERE model = %s AND version = %s", (model.name, model.version)
    ).fetchone()
    return int(row[0]) if row else None


def _compare(
    conn: psycopg.Connection[Any], model: Model, files: list[Path], basis: int | None, *, workers: int
) -> tuple[Changes, Basis]:
    with scan_pool(files, workers) as pool:  # the workers start while the basis loads
        pairs = Basis(load_pairs(conn, basis) if basis is not None else np.empty(0, PAIR))
        changes = find_changes(files, model.card, pairs, batch_rows=KEY_BATCH_ROWS, pool=pool)
    return changes, pairs


def _input_stats(changes: Changes, card: Card) -> dict[str, Any] | None:
    """The unchanged rows' statistics plus the valid forwarded rows' (exactly the rows a full
    run's ``observe`` would count: validation splits the forwarded rows as their shards will)."""
    if changes.unchanged_stats is None:
        return None
    parts = [changes.unchanged_stats] if changes.unchanged_stats else []
    good = good_rows(changes.forwarded, card).select(card.scalar_columns)
    if good.num_rows:
        parts.append(column_stats(good, card.scalar_columns, reference=card.reference_stats))
    return merge_stats(parts) if parts else None


def _write(changes: Changes, path: Path, settings: Settings) -> None:
    """The forwarded rows as one Parquet file (row groups within the configured bound), atomically."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    pq.write_table(changes.forwarded, partial, row_group_size=min(settings.max_row_group_rows, 1 << 20))
    os.replace(partial, path)


def plan_refresh(
    conn: psycopg.Connection[Any],
    settings: Settings,
    model: Model,
    files: list[Path],
    *,
    prune_missing: bool,
) -> RefreshPlan:
    """Compare ``files`` with the newest published run of this version (see the module docstring)."""
    registered = version_id(conn, model)
    basis = basis_run(conn, version_id=registered, signature=model.signature) if registered else None
    changes, pairs = _compare(conn, model, files, basis, workers=settings.workers)
    path = _folder(settings) / f"plan-{uuid.uuid4().hex}.parquet"
    _write(changes, path, settings)
    carried = _carried(changes, pairs, model.card, prune_missing=prune_missing)
    return RefreshPlan(basis, path, carried, changes.rows_unchanged, _input_stats(changes, model.card))


def _carried(changes: Changes, basis: Basis, card: Card, *, prune_missing: bool) -> np.ndarray:
    """The pairs a run carries over: its unchanged rows', and without ``--prune-missing`` those of
    keys absent from the snapshot too (their predictions stay current)."""
    if prune_missing:
        return sort_pairs(changes.unchanged)
    return basis.without(changes.forwarded_key_hashes(card))


def carried_pending(conn: psycopg.Connection[Any], run: RunRecord) -> bool:
    """Whether some of an incremental run's carried-over pairs are not stored yet."""
    if not run.incremental or run.pairs_carried_plan is None:
        return False
    return carried_pairs_stored(conn, run.run_id) != run.pairs_carried_plan


def store_carried(
    url: str,
    settings: Settings,
    run: RunRecord,
    model: Model,
    files: list[Path],
    carried: np.ndarray | None,
) -> None:
    """Store the run's carried-over pairs (``write_carried``); ``carried``: the planner's, when this
    process planned the run. Otherwise (a resumed run) they are made again from the run's basis,
    which gives the same pairs.

    Raises:
        InputError: the pairs made again differ from the plan (the basis run was collected).
    """
    with connection(url, autocommit=True) as conn:
        if carried is None:
            changes, basis = _compare(conn, model, files, run.basis_run_id, workers=settings.workers)
            carried = _carried(changes, basis, model.card, prune_missing=run.prune_missing)
            if changes.rows_unchanged != run.rows_unchanged_plan or len(carried) != run.pairs_carried_plan:
                raise InputError(
                    f"run {run.run_id} cannot be resumed: its basis run {run.basis_run_id} no longer "
                    "gives the same unchanged rows; start a new run"
                )
        try:
            write_carried(conn, run.run_id, carried)
        except psycopg.Error as exc:
            raise StoreError(
                f"run {run.run_id}: storing its carried-over pairs failed ({one_line(exc)}); "
                "rerun the same command to resume"
            ) from exc


def adopt(plan: RefreshPlan, settings: Settings, run_id: int) -> None:
    """Name the planned file after the run it now belongs to."""
    os.replace(plan.file, run_file(settings, run_id))


def discard(plan: RefreshPlan) -> None:
    plan.file.unlink(missing_ok=True)


def engine_files(
    conn: psycopg.Connection[Any], settings: Settings, run: RunRecord, model: Model, files: list[Path]
) -> list[Path]:
    """The files the engine reads for ``run``: the snapshot, or an incremental run's forwarded rows.

    A forwarded file that went missing (a crash before it was named, a cleaned home folder) is
    made again from the run's basis; the same basis gives the same rows.

    Raises:
        InputError: the rows made again differ from the plan (the basis run was collected).
    """
    if not run.incremental:
        return files
    path = run_file(settings, run.run_id)
    if not path.exists():
        changes, _ = _compare(conn, model, files, run.basis_run_id, workers=settings.workers)
        if changes.rows_unchanged != run.rows_unchanged_plan:
            raise InputError(
                f"run {run.run_id} cannot be resumed: its rows to score are gone and its basis run "
                f"{run.basis_run_id} no longer gives the same ones; start a new run"
            )
        _write(changes, path, settings)
    return [path]


def remove_file(settings: Settings, run_id: int) -> None:
    """Forget an incremental run's forwarded rows once the run is verified."""
    run_file(settings, run_id).unlink(missing_ok=True)
