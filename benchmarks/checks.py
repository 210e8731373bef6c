"""Self-checks: a scenario counts only if it stored the right number of rows and the right scores.

The reference is computed here, independently of every scenario: the input's rows are validated
with ``pipelines.core.validate`` (the expected number of predictions), and a sample of valid rows
is scored by a fresh onnxruntime session of the same model file. A scenario's stored scores for
the sample keys must equal the reference bit for bit (float32), labels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psycopg
import pyarrow as pa
from psycopg import sql

from pipelines.core.inputs import list_input_files, read_table
from pipelines.core.model import Model, load_model, to_feed
from pipelines.core.validate import validate

#: About this many sample keys per input (every k-th valid row).
SAMPLE_KEYS = 200


@dataclass(frozen=True)
class Reference:
    """What a correct run over the input stores."""

    rows_in: int
    rows_valid: int
    sample: dict[str, tuple[np.float32, int]] = field(repr=False)


def _fresh_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reference(source: Path, models_dir: Path, model_name: str, *, rows_hint: int) -> Reference:
    """Count the input's valid rows and score a sample of them with raw onnxruntime (one batch)."""
    model = load_model(models_dir, model_name)
    columns = [model.card.key, *[c for c in model.card.input_names if c != model.card.key]]
    every = max(1, rows_hint // SAMPLE_KEYS)
    rows_in = rows_valid = 0
    picked: list[pa.Table] = []
    for path in list_input_files(source):
        checked = validate(read_table(path, columns), model.card)
        good = checked.good
        rows_in += good.num_rows + checked.rejects.num_rows
        offsets = np.arange((-rows_valid) % every, good.num_rows, every)
        if len(offsets):
            picked.append(good.take(pa.array(offsets)))
        rows_valid += good.num_rows
    sample = pa.concat_tables(picked) if picked else None
    return Reference(rows_in=rows_in, rows_valid=rows_valid, sample=_score(model, sample))


def _score(model: Model, sample: pa.Table | None) -> dict[str, tuple[np.float32, int]]:
    if sample is None or sample.num_rows == 0:
        return {}
    session = _fresh_session(model.version_dir / model.file_name)
    score, label = session.run(["score", "label"], to_feed(model.card, sample))
    keys = sample.column(model.card.key).to_pylist()
    return {
        k: (np.float32(s), int(lbl))
        for k, s, lbl in zip(keys, np.asarray(score).reshape(-1), np.asarray(label).reshape(-1), strict=True)
    }


def compare_sample(ref: Reference, stored: dict[str, tuple[float, int]]) -> list[str]:
    """Problems of ``stored`` (key -> (score, label)) against the reference sample, bit for bit."""
    problems = []
    missing = [k for k in ref.sample if k not in stored]
    if missing:
        problems.append(f"{len(missing)} sample key(s) not stored, e.g. {missing[0]}")
    for key, (score, label) in ref.sample.items():
        if key not in stored:
            continue
        got_score, got_label = np.float32(stored[key][0]), int(stored[key][1])
        if got_score.view(np.uint32) != score.view(np.uint32) or got_label != label:
            problems.append(
                f"key {key}: stored ({got_score!r}, {got_label}), onnxruntime ({score!r}, {label})"
            )
            break
    return problems


def _fetch(conn: psycopg.Connection[Any], query: sql.Composable, keys: list[str]) -> dict[str, Any]:
    rows = conn.execute(query, (keys,)).fetchall()
    return {str(k): (float(s), int(lbl)) for k, s, lbl in rows}


def check_ours(url: str, ref: Reference, summary: dict[str, Any], model: str) -> list[str]:
    """Problems with a `predcache run --publish` result (empty when it is right)."""
    problems = []
    expected = (ref.rows_in, ref.rows_valid, ref.rows_in - ref.rows_valid)
    got = (summary.get("rows_in"), summary.get("rows_out"), summary.get("rows_rejected"))
    if got != expected:
        problems.append(f"rows in/out/rejected {got}, expected {expected}")
    if not summary.get("published"):
        problems.append("the run was not published")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM predictions_current WHERE model = %s", (model,)).fetchone()
        visible = int(row[0]) if row else 0
        stored = _fetch(
            conn,
            sql.SQL(
                "SELECT key, score, label FROM predictions_current WHERE model = {} AND key = ANY(%s)"
            ).format(sql.Literal(model)),
            list(ref.sample),
        )
    if visible != ref.rows_valid:
        problems.append(f"{visible} predictions visible, expected {ref.rows_valid}")
    return problems + compare_sample(ref, stored)


def check_table(url: str, table: str, ref: Reference) -> list[str]:
    """Problems with a peer's plain predictions table (empty when it is right)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT key) FROM {}").format(sql.Identifier(table))
        ).fetchone()
        count, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
        stored = _fetch(
            conn,
            sql.SQL("SELECT key, score, label FROM {} WHERE key = ANY(%s)").format(sql.Identifier(table)),
            list(ref.sample),
        )
    problems = []
    if (count, distinct) != (ref.rows_valid, ref.rows_valid):
        problems.append(f"{count} rows ({distinct} distinct keys) stored, expected {ref.rows_valid}")
    return problems + compare_sample(ref, stored)
