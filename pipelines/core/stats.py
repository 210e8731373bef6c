"""Column statistics of model inputs and outputs, and drift (PSI) between two sets of them.

Statistics are plain JSON-ready dicts so they can live in a model card and in the database:

* numeric columns: ``count`` (rows), ``nulls`` (null or NaN), ``mean``, ``std`` (population), ``min``,
  ``max`` and ``histogram`` = ``{"edges": [...], "counts": [...]}`` over fixed quantile edges (deciles
  of the data, repeated edges merged, so at most ``HISTOGRAM_BINS`` bins; values below the first or
  above the last edge fall into the end bins).
* string columns: ``count``, ``nulls``, ``distinct`` and ``top``, the ``TOP_VALUES`` most frequent
  values with their counts.

To measure drift, compute the current data's statistics against the reference
(``column_stats(table, columns, reference=ref)``): numeric histograms then use the reference's edges
and ``top`` also counts every reference value, which makes ``drift`` exact and lets shard statistics
be added up with ``merge_stats``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import InputError

try:
    from pipelines.core import _moments as native
except ImportError:  # pragma: no cover - the extension is built by every install
    native = None  # type: ignore[assignment]

HISTOGRAM_BINS = 10
TOP_VALUES = 20
#: Bucket shares are clipped to this before the PSI log so an empty bucket does not give infinity.
PSI_EPSILON = 1e-4
NUMERIC = "numeric"
CATEGORICAL = "categorical"

ColumnStats = dict[str, Any]


def column_stats(
    table: pa.Table, columns: list[str], *, reference: dict[str, ColumnStats] | None = None
) -> dict[str, ColumnStats]:
    """Statistics of ``columns`` of ``table``.

    Args:
        table: The data.
        columns: Numeric (integer, float, bool) or string columns of ``table``.
        reference: Statistics to compare against later; a column it holds gets its histogram on the
            reference's edges and counts for every reference top value.

    Returns:
        Column name -> statistics (see the module docstring), JSON-serialisable.

    Raises:
        InputError: a column is missing or of a type without statistics.
    """
    reference = reference or {}
    out: dict[str, ColumnStats] = {}
    for name in columns:
        if name not in table.column_names:
            raise InputError(f"cannot compute statistics of column '{name}': the table has no such column")
        column = table.column(name)
        kind = _kind(name, column.type)
        ref = reference.get(name)
        if kind == NUMERIC:
            edges = ref["histogram"]["edges"] if ref and ref.get("kind") == NUMERIC else None
            out[name] = _numeric_stats(column, edges)
        else:
            known = list(ref["top"]) if ref and ref.get("kind") == CATEGORICAL else []
            out[name] = _categorical_stats(column, known)
    return out


def _kind(name: str, dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype):
        return NUMERIC
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype):
        return CATEGORICAL
    raise InputError(
        f"cannot compute statistics of column '{name}' of type {dtype}; cast it to a number or string"
    )


def _numeric_stats(
    column: pa.ChunkedArray, edges: list[float] | None, *, use_native: bool = True
) -> ColumnStats:
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    if edges is not None and native is not None and use_native:
        return _numeric_stats_native(column, edges)
    valid = column.filter(pc.invert(pc.is_null(column, nan_is_null=True)))
    values = valid.to_numpy().astype(np.float64, copy=False)
    stats: ColumnStats = {"kind": NUMERIC, "count": len(column), "nulls": len(column) - len(values)}
    if len(values) == 0:
        hist_edges = edges or []
        stats.update(mean=None, std=None, min=None, max=None)
        stats["histogram"] = {"edges": hist_edges, "counts": [0] * _bins(hist_edges)}
        return stats
    if edges is None:
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1))).tolist()
    stats.update(
        mean=float(values.mean()), std=float(values.std()), min=float(values.min()), max=float(values.max())
    )
    stats["histogram"] = {"edges": [float(e) for e in edges], "counts": _bin_counts(values, edges)}
    return stats


def _numeric_stats_native(column: pa.ChunkedArray, edges: list[float]) -> ColumnStats:
    """``_numeric_stats`` on known edges in two C passes (``core/_moments.c``); equal up to the
    order floats are summed in."""
    values = np.asarray(column.to_numpy(), dtype=np.float64)  # nulls arrive as NaN
    counts = np.zeros(max(len(edges) - 1, 1), dtype=np.int64)
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    valid, mean, std, low, high = native.summary(values, inner, counts)
    stats: ColumnStats = {"kind": NUMERIC, "count": len(column), "nulls": len(column) - valid}
    stats.update(mean=mean, std=std, min=low, max=high)
    stats["histogram"] = {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts] if edges and valid else [0] * _bins(edges),
    }
    return stats


def counted_stats(values: np.ndarray, counts: np.ndarray, nulls: int) -> ColumnStats:
    """``column_stats`` of a numeric column given as distinct values and how often each occurs
    (a server's ``GROUP BY``), without materialising the rows: the same numbers, deciles included
    (numpy's linear quantile read off the cumulative counts), up to the order floats are summed in.

    Args:
        values: the distinct non-null values.
        counts: how many rows hold each.
        nulls: rows that are null.
    """
    order = np.argsort(values, kind="stable")
    values = np.asarray(values, dtype=np.float64)[order]
    counts = np.asarray(counts, dtype=np.int64)[order]
    n = int(counts.sum())
    stats: ColumnStats = {"kind": NUMERIC, "count": n + nulls, "nulls": nulls}
    if n == 0:
        stats.update(mean=None, std=None, min=None, max=None)
        stats["histogram"] = {"edges": [], "counts": []}
        return stats
    mean = float(np.dot(values, counts) / n)
    std = float(np.sqrt(np.dot((values - mean) ** 2, counts) / n))
    ends = np.cumsum(counts)  # row i (sorted) holds values[searchsorted(ends, i, side="right")]
    positions = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1) * (n - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    low = values[np.searchsorted(ends, below, side="right")]
    high = values[np.searchsorted(ends, above, side="right")]
    quantiles = low + (high - low) * (positions - below)
    edges = np.unique(quantiles).tolist()
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    bins = np.bincount(np.searchsorted(inner, values, side="right"), weights=counts, minlength=_bins(edges))
    stats.update(mean=mean, std=std, min=float(values[0]), max=float(values[-1]))
    stats["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in bins]}
    return stats


def _bins(edges: list[float]) -> int:
    return max(len(edges) - 1, 1) if edges else 0


def _bin_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    if not edges:  # the reference had no values: there are no bins to count into
        return []
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    index = np.searchsorted(inner, values, side="right")
    return [int(c) for c in np.bincount(index, minlength=_bins(edges))]


def _categorical_stats(column: pa.ChunkedArray, known: list[str]) -> ColumnStats:
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, pa.string())
    counted = pc.value_counts(pc.drop_null(column))
    frequencies = dict(
        zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    )
    ranked = sorted(frequencies.items(), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]
    top = dict(ranked)
    for value in known:
        top.setdefault(value, frequencies.get(value, 0))
    return {
        "kind": CATEGORICAL,
        "count": len(column),
        "nulls": column.null_count,
        "distinct": len(frequencies),
        "top": {str(k): int(v) for k, v in top.items()},
    }


def drift(reference: dict[str, ColumnStats], current: dict[str, ColumnStats]) -> dict[str, float]:
    """Population stability index of each column the two statistics share.

    Buckets: the reference's histogram bins (numeric) or its top values plus "other" (string), and
    a bucket for nulls in both cases. When ``current`` was not computed against ``reference`` its
    numeric shares are interpolated from its own histogram (approximate). PSI < 0.1 is commonly read
    as stable, > 0.25 as a significant shift.

    Args:
        reference: Statistics of the reference data (e.g. a model card's ``reference_stats``).
        current: Statistics of the data to compare, ideally ``column_stats(..., reference=reference)``.

    Returns:
        Column name -> PSI (>= 0). Columns missing on either side, of different kinds, or without
        rows on either side are left out.
    """
    out: dict[str, float] = {}
    for name, ref in reference.items():
        cur = current.get(name)
        if cur is None or cur.get("kind") != ref.get("kind") or not ref["count"] or not cur["count"]:
            continue
        if ref["kind"] == NUMERIC:
            expected, actual = _numeric_buckets(ref, cur)
        else:
            expected, actual = _categorical_buckets(ref, cur)
        out[name] = _psi(expected, actual)
    return out


def _numeric_buckets(ref: ColumnStats, cur: ColumnStats) -> tuple[np.ndarray, np.ndarray]:
    edges = ref["histogram"]["edges"]
    expected = np.asarray([*ref["histogram"]["counts"], ref["nulls"]], dtype=np.float64)
    if cur["histogram"]["edges"] == edges:
        counts = np.asarray(cur["histogram"]["counts"], dtype=np.float64)
    else:
        counts = _interpolated_counts(cur, edges)
    return expected, np.append(counts, float(cur["nulls"]))


def _interpolated_counts(cur: ColumnStats, edges: list[float]) -> np.ndarray:
    bins = _bins(edges)
    own_edges = np.asarray(cur["histogram"]["edges"], dtype=np.float64)
    own_counts = np.asarray(cur["histogram"]["counts"], dtype=np.float64)
    total = own_counts.sum()
    if bins == 0 or total == 0:
        return np.zeros(bins)
    if len(own_edges) < 2:  # a constant column: all its mass sits at one value
        return np.asarray(_bin_counts(own_edges, edges), dtype=np.float64) * total
    cdf = np.concatenate([[0.0], np.cumsum(own_counts) / total])
    inner = np.interp(np.asarray(edges[1:-1], dtype=np.float64), own_edges, cdf)
    return np.diff(np.concatenate([[0.0], inner, [1.0]])) * total


def _categorical_buckets(ref: ColumnStats, cur: ColumnStats) -> tuple[np.ndarray, np.ndarray]:
    values = list(ref["top"])
    expected = [ref["top"][v] for v in values]
    actual = [cur["top"].get(v, 0) for v in values]
    ref_other = ref["count"] - ref["nulls"] - sum(expected)
    cur_other = max(cur["count"] - cur["nulls"] - sum(actual), 0)
    return (
        np.asarray([*expected, ref_other, ref["nulls"]], dtype=np.float64),
        np.asarray([*actual, cur_other, cur["nulls"]], dtype=np.float64),
    )


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    p = np.clip(expected / expected.sum(), PSI_EPSILON, None)
    q = np.clip(actual / actual.sum(), PSI_EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def merge_stats(parts: list[dict[str, ColumnStats]]) -> dict[str, ColumnStats]:
    """Add up statistics of disjoint parts of one dataset (e.g. shards scored in parallel).

    Exact for counts, nulls, mean, std, min, max and histograms when every part was computed
    against the same ``reference``; a string value's count is exact only if every part listed it.

    Raises:
        ValueError: the parts disagree on columns, kinds or histogram edges.
    """
    if not parts:
        return {}
    names = list(parts[0])
    if any(list(part) != names for part in parts):
        raise ValueError(
            "cannot merge statistics of different columns; compute every part with the same columns"
        )
    return {name: _merge_column(name, [part[name] for part in parts]) for name in names}


def _merge_column(name: str, stats: list[ColumnStats]) -> ColumnStats:
    kind = stats[0]["kind"]
    if any(s["kind"] != kind for s in stats):
        raise ValueError(f"cannot merge statistics of column '{name}': it is numeric in some parts only")
    merged: ColumnStats = {
        "kind": kind,
        "count": sum(s["count"] for s in stats),
        "nulls": sum(s["nulls"] for s in stats),
    }
    if kind == CATEGORICAL:
        top: dict[str, int] = {}
        for s in stats:
            for value, count in s["top"].items():
                top[value] = top.get(value, 0) + count
        merged["distinct"] = max(s["distinct"] for s in stats)  # a lower bound once merged
        merged["top"] = dict(sorted(top.items(), key=lambda item: (-item[1], item[0])))
        return merged
    edges = stats[0]["histogram"]["edges"]
    if any(s["histogram"]["edges"] != edges for s in stats):
        raise ValueError(
            f"cannot merge histograms of column '{name}': compute every part with the same reference"
        )
    merged["histogram"] = {
        "edges": edges,
        "counts": [int(c) for c in np.sum([s["histogram"]["counts"] for s in stats], axis=0)],
    }
    filled = [s for s in stats if s["mean"] is not None]
    sizes = [s["count"] - s["nulls"] for s in filled]
    total = sum(sizes)
    if not total:
        merged.update(mean=None, std=None, min=None, max=None)
        return merged
    mean = sum(n * s["mean"] for n, s in zip(sizes, filled, strict=True)) / total
    square_sum = sum(
        n * (s["std"] ** 2 + (s["mean"] - mean) ** 2) for n, s in zip(sizes, filled, strict=True)
    )
    merged.update(
        mean=mean,
        std=math.sqrt(square_sum / total),
        min=min(s["min"] for s in filled),
        max=max(s["max"] for s in filled),
    )
    return merged


def typed_outputs(card: Any) -> list[str]:
    """The stored outputs statistics cover: ``score``, and ``label`` when the model has one."""
    return ["score", "label"] if card.label_output is not None else ["score"]


def shard_stats(good: pa.Table, predictions: pa.Table, card: Any) -> dict[str, dict[str, ColumnStats]] | None:
    """A shard's share of its run's statistics: ``inputs`` (the valid rows, coerced) and ``outputs``
    (the stored predictions' outputs that have a reference), against the card's reference so the
    shards' parts add up exactly.

    None when the reference lacks an input column (parts would not share histogram edges): the
    run's input statistics are then taken by reading the input again.
    """
    if any(name not in card.reference_stats for name in card.scalar_columns):
        return None
    outputs = [name for name in typed_outputs(card) if name in card.reference_stats]
    return {
        "inputs": column_stats(
            good.select(card.scalar_columns), card.scalar_columns, reference=card.reference_stats
        ),
        "outputs": column_stats(predictions.select(outputs), outputs, reference=card.reference_stats),
    }
