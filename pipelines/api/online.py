"""Online scoring for cache misses: the batch's own stateless function, run in the API process.

A row sent to ``predictions:compute`` goes through exactly what a batch row goes through:
the active version's card, ``core.validate`` (the same coercion rules and reject reasons) and
``core.score.score_table`` on the card's default signature, so an online answer is bit for
bit what the next batch run stores for the same features. Nothing is written to the cache.

The onnxruntime session is this process's one session for the model file (``core.model``
caches it) and runs on a small dedicated thread pool, off the event loop, with an explicit
intra-op thread budget.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.api.errors import UnprocessableRowsError
from pipelines.core.card import DEFAULT_SIGNATURE
from pipelines.core.model import Model, arrow_type, load_model
from pipelines.core.score import score_table
from pipelines.core.validate import check_schema
from pipelines.errors import InputError

#: The key field of a compute row (whatever the model's key column is called).
ROW_KEY = "key"
ONLINE_SHARD = "online"


@dataclass(frozen=True)
class Computed:
    """One row's online result: a prediction (``fields``) or a reject ``reason``."""

    key: str
    fields: dict[str, Any] | None = None
    reason: str | None = None


def rows_to_table(rows: list[dict[str, Any]], model: Model) -> pa.Table:
    """JSON rows as the Arrow table a batch shard would hold: the card's key column and inputs.

    Fields that are not model inputs are ignored (as in batch). Each input column's Arrow type
    is inferred from the JSON values, then held to the batch's schema rules (``check_schema``):
    a number where a string is expected, or a string where a number is expected, is refused.

    Raises:
        UnprocessableRowsError: a row lacks a model input, or a field has a type the model
            cannot take without guessing.
    """
    card = model.card
    columns: dict[str, pa.Array] = {card.key: pa.array([row[ROW_KEY] for row in rows], pa.string())}
    for name in card.columns:
        missing = [i for i, row in enumerate(rows) if name not in row]
        if missing:
            raise UnprocessableRowsError(
                f"rows[{missing[0]}] has no field '{name}'; every row needs each model input "
                f"({', '.join(card.columns)}); send null for a missing value"
            )
        values = [row[name] for row in rows]
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            raise UnprocessableRowsError(
                f"field '{name}' mixes value types across rows; send every '{name}' as the same JSON type"
            ) from None
        if pa.types.is_null(column.type):  # every value null: typed as the model wants, rejected per row
            column = pa.nulls(len(values), _input_type(model, name))
        columns[name] = column
    table = pa.table(columns)
    try:
        check_schema(table.schema, card, source="rows")
    except InputError as exc:
        raise UnprocessableRowsError(str(exc)) from None
    return table


def _input_type(model: Model, name: str) -> pa.DataType:
    """The Arrow type the card feeds column ``name`` as (a list type for a list-fed input)."""
    spec = next(spec for spec in model.card.inputs if name in spec.source_columns)
    return pa.list_(arrow_type(spec.dtype)) if spec.is_list else arrow_type(spec.dtype)


#: Columns of a scored shard that are bookkeeping, not part of a prediction's answer.
_NOT_ANSWERED = {"key", "input_fp"}


def outputs_object(text: str | None, score: float, label: int | None) -> dict[str, Any]:
    """A row's ``outputs`` exactly as ``predictions_current`` shows it (sql/004).

    Stored JSON text as it is; when a model's outputs are only ``score`` and ``label`` no JSON
    is stored and the view builds ``{"score", "label"}`` from the typed columns: float4 printed
    shortest (PostgreSQL's float4out, numpy's float32 ``str``), nulls left out.
    """
    if text is not None:
        parsed: dict[str, Any] = json.loads(text)
        return parsed
    built: dict[str, Any] = {"score": float(str(np.float32(score)))}
    if label is not None:
        built["label"] = label
    return built


def prediction_fields(predictions: pa.Table) -> dict[str, dict[str, Any]]:
    """key -> the fields a lookup returns for each scored row (``score``, ``label``, ``outputs``)."""
    names = [name for name in predictions.column_names if name not in _NOT_ANSWERED]
    keys = predictions.column("key").to_pylist()
    values = {name: predictions.column(name).to_pylist() for name in names}
    out = {}
    for i, key in enumerate(keys):
        fields = {name: values[name][i] for name in names}
        if "outputs" in fields:
            fields["outputs"] = outputs_object(fields["outputs"], fields["score"], fields.get("label"))
        out[key] = fields
    return out


class OnlineScorer:
    """Scores request rows with the active version of a model, one session per model file.

    Args:
        models_dir: the folder of model versions (``<name>/<version>/card.json``).
        threads: intra-op threads of each onnxruntime session.
        workers: threads that run sessions (calls beyond it queue): the API's CPU budget
            for online scoring.
        batch_rows: rows per onnxruntime call (results do not depend on it: static int8).
    """

    def __init__(
        self, models_dir: Path, *, threads: int = 1, workers: int = 1, batch_rows: int = 8192
    ) -> None:
        self.models_dir = models_dir
        self.threads = threads
        self.batch_rows = batch_rows
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predcache-online")
        self._models: dict[tuple[str, str], Model] = {}
        self._lock = threading.Lock()

    def model(self, name: str, version: str) -> Model:
        """The loaded model (card checked against its files' sha256 on first use)."""
        with self._lock:
            loaded = self._models.get((name, version))
            if loaded is None:
                loaded = load_model(
                    self.models_dir, name, version, signature=DEFAULT_SIGNATURE, threads=self.threads
                )
                self._models[(name, version)] = loaded
            return loaded

    def compute(self, name: str, version: str, rows: list[dict[str, Any]]) -> list[Computed]:
        """Validate and score ``rows`` (blocking); one result per row, in request order.

        Raises:
            UnprocessableRowsError: see ``rows_to_table``.
            PredcacheError: the model version's files are missing or do not match its card.
        """
        model = self.model(name, version)
        table = rows_to_table(rows, model)
        result = score_table(ONLINE_SHARD, table, model, batch_rows=self.batch_rows)
        scored = prediction_fields(result.predictions)
        rejected = dict(
            zip(
                result.rejects.column("key").to_pylist(),
                result.rejects.column("reason").to_pylist(),
                strict=True,
            )
        )
        out = []
        for row in rows:
            key = row[ROW_KEY]
            if key in scored:
                out.append(Computed(key, fields=scored[key]))
            else:
                out.append(Computed(key, reason=rejected.get(key, "not scored")))
        return out

    async def compute_async(self, name: str, version: str, rows: list[dict[str, Any]]) -> list[Computed]:
        """``compute`` on the scorer's thread pool, so the event loop keeps serving lookups."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.compute, name, version, rows)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def now_text() -> str:
    return datetime.now(UTC).isoformat()
