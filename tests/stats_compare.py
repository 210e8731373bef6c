"""Comparing two sets of run statistics where merged statistics are exact (``core.stats.merge_stats``).

Counts, nulls, numeric moments and histograms on the reference's edges and the counts of the
reference's top values add up exactly over any split of the rows; a categorical column's other
top values and ``distinct``, and the histogram of a column without a reference (its edges come
from the data), depend on how the rows were batched.
"""

from __future__ import annotations

import math
from typing import Any


def exact_parts(stats: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``stats`` without the parts that depend on batching."""
    out = {}
    for name, column in stats.items():
        column = dict(column)
        if name not in reference:
            del column["histogram"]
        elif column["kind"] == "categorical":
            column["top"] = {v: c for v, c in column["top"].items() if v in reference[name]["top"]}
            del column["distinct"]
        out[name] = column
    return out


def close(a: object, b: object) -> bool:
    """Equal, floats up to rounding (sums added in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b
