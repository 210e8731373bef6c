"""Online scoring for cache misses: the batch's own stateless function, run in the API process.

A row sent to ``predictions:compute`` goes through exactly what a batch row goes through:
the active version's card, ``core.validate`` (the same coercion rules and reject reasons) and
``core.score.score_table`` on the card's default signature, so an online answer is bit for
bit what the next batch run stores for the same features. Nothing is written to the cache.

The onnxruntime session is this process's one session for the model file (``core.model``
caches it) and runs on a small dedicated thread pool, off the event loop, with an explicit
intra-op thread budget. Concurrent requests for one model version are validated and scored
together (``pipelines.api.batcher``): the fixed cost of a call is paid once per batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.api.batcher import MicroBatcher
from pipelines.api.rows import ROW_KEY, ReadBatch, RowReader, Rows
from pipelines.core.card import DEFAULT_SIGNATURE
from pipelines.core.model import Model, load_model
from pipelines.core.score import score_table

ONLINE_SHARD = "online"


@dataclass(frozen=True)
class Computed:
    """One row's online result: a prediction (``fields``) or a reject ``reason``."""

    key: str
    fields: dict[str, Any] | None = None
    reason: str | None = None


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


Answer = list[Computed] | Exception
#: Rows per coalesced batch: 64 concurrent 50-row requests make ~3 batches, each a few ms.
DEFAULT_MAX_BATCH_ROWS = 1024


class OnlineScorer:
    """Scores request rows with the active version of a model, one session per model file.

    Concurrent requests for one model version are coalesced (``pipelines.api.batcher``) into one
    validate + score call; rows are scored independently (static int8), so a row's answer does
    not depend on what it was batched with.

    Args:
        models_dir: the folder of model versions (``<name>/<version>/card.json``).
        threads: intra-op threads of each onnxruntime session.
        workers: threads that run scoring calls (batches beyond it wait): the API's CPU budget
            for online scoring.
        batch_rows: rows per onnxruntime call (results do not depend on it: static int8).
        max_batch_rows: rows per coalesced batch of requests.
        observe: ``observe(model, requests, rows)`` once per coalesced batch (for metrics).
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        threads: int = 1,
        workers: int = 1,
        batch_rows: int = 8192,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        observe: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.threads = threads
        self.batch_rows = batch_rows
        self._models: dict[tuple[str, str], tuple[Model, RowReader]] = {}
        self._lock = threading.Lock()

        def observed(group: tuple[str, str], requests: int, rows: int) -> None:
            if observe is not None:
                observe(group[0], requests, rows)

        self._batcher: MicroBatcher[tuple[str, str], Rows, list[Computed]] = MicroBatcher(
            lambda group, batch: self.score(*group, batch),
            size=len,
            workers=workers,
            max_rows=max_batch_rows,
            observe=observed,
        )

    def model(self, name: str, version: str) -> tuple[Model, RowReader]:
        """The loaded model (card checked against its files' sha256 on first use) and its row reader."""
        with self._lock:
            loaded = self._models.get((name, version))
            if loaded is None:
                model = load_model(
                    self.models_dir, name, version, signature=DEFAULT_SIGNATURE, threads=self.threads
                )
                loaded = self._models[(name, version)] = (model, RowReader(model))
            return loaded

    def score(self, name: str, version: str, requests: list[Rows]) -> list[Answer]:
        """Validate and score the rows of several requests (blocking), in as few calls as possible.

        Returns:
            Per request, in order: one result per row (in row order), or the request's own error
            (``UnprocessableRowsError``: see ``RowReader.table``).

        Raises:
            PredcacheError: the model version's files are missing or do not match its card.
        """
        model, reader = self.model(name, version)
        batches, refused = reader.read(requests)
        answers: dict[int, Answer] = dict(refused)
        for batch in batches:
            answers.update(
                zip(batch.members, self._score_or_split(model, reader, requests, batch), strict=True)
            )
        return [answers[i] for i in range(len(requests))]

    def _score_or_split(
        self, model: Model, reader: RowReader, requests: list[Rows], batch: ReadBatch
    ) -> list[Answer]:
        """One ``score_table`` call for a batch; on a fault, each request alone, so it stays its own."""
        try:
            return self._score_table(model, [requests[i] for i in batch.members], batch.table)
        except Exception as exc:  # a fault, not a row problem (those are rejects with a reason)
            if len(batch.members) == 1:
                return [exc]
        answers: list[Answer] = []
        for i in batch.members:
            try:
                answers.extend(self._score_table(model, [requests[i]], reader.table(requests[i])))
            except Exception as exc:  # the fault of this request alone
                answers.append(exc)
        return answers

    def _score_table(self, model: Model, requests: list[Rows], table: pa.Table) -> list[Answer]:
        """Score ``table`` (the rows of ``requests``, in order); one answer per request."""
        result = score_table(
            ONLINE_SHARD, table, model, batch_rows=self.batch_rows, fingerprints=False, statistics=False
        )
        scored = prediction_fields(result.predictions)
        rejected = dict(
            zip(
                result.rejects.column("key").to_pylist(),
                result.rejects.column("reason").to_pylist(),
                strict=True,
            )
        )
        return [[_computed(row[ROW_KEY], scored, rejected) for row in rows] for rows in requests]

    def compute(self, name: str, version: str, rows: Rows) -> list[Computed]:
        """Validate and score one request's ``rows`` alone (blocking); one result per row, in order.

        Raises:
            UnprocessableRowsError: see ``RowReader.table``.
            PredcacheError: the model version's files are missing or do not match its card.
        """
        (answer,) = self.score(name, version, [rows])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def compute_async(self, name: str, version: str, rows: Rows) -> list[Computed]:
        """``compute``, coalesced with concurrent requests for the same model version.

        Raises:
            UnprocessableRowsError: see ``RowReader.table`` (this request's rows only).
            PredcacheError: the model version's files are missing or do not match its card.
            ScorerClosedError: the server is shutting down.
        """
        return await self._batcher.submit((name, version), rows)

    def waiting(self) -> int:
        """Requests queued for a scoring thread (call on the event loop's thread)."""
        return self._batcher.waiting()

    def close(self) -> None:
        self._batcher.close()


def _computed(key: str, scored: dict[str, dict[str, Any]], rejected: dict[str, str]) -> Computed:
    if key in scored:
        return Computed(key, fields=scored[key])
    return Computed(key, reason=rejected.get(key, "not scored"))


def now_text() -> str:
    return datetime.now(UTC).isoformat()
