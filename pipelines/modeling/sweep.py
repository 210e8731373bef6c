"""Compare quantization settings on one model: accuracy vs fp32 and speed of each, side by side.

A build ships the settings its recipe names (so two builds give identical bytes); the sweep is the
evidence for that choice and is recorded in the card when a recipe asks for it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.card import Card
from pipelines.modeling.gate import (
    TIMING_REPEATS,
    Feed,
    best_times,
    binary_metrics,
    check_int8,
    judge,
    open_session,
    run,
)
from pipelines.modeling.quantize import QuantSettings, quantize_model

#: The combinations worth measuring on an x86 CPU (U8S8 is the native path; S8S8 is converted to it).
CANDIDATES: tuple[QuantSettings, ...] = tuple(
    QuantSettings(activation_type=activation, per_channel=per_channel, reduce_range=reduce_range)
    for activation in ("QUInt8", "QInt8")
    for per_channel in (False, True)
    for reduce_range in (False, True)
)


def sweep_quantization(
    fp32_path: Path,
    card: Card,
    calibration: pa.Table,
    feeds: list[Feed],
    truth: np.ndarray,
    *,
    candidates: Sequence[QuantSettings] = CANDIDATES,
    repeats: int = TIMING_REPEATS,
) -> list[dict[str, Any]]:
    """Quantize ``fp32_path`` with each candidate and run the gate on each.

    All candidates and fp32 are timed in one interleaved run, so their speeds are comparable.

    Returns:
        One entry per candidate: its settings, whether it passes the gate, AUC delta, label
        agreement, int8 speedup, rows/s and the largest score difference from fp32.
    """
    fp32 = open_session(fp32_path)
    fp32_scored = run(fp32, feeds)
    auc_fp32 = binary_metrics(truth, fp32_scored)["auc"]
    sessions = {"fp32": fp32}
    checks = []
    with tempfile.TemporaryDirectory(prefix="predcache-sweep-") as scratch:
        for index, settings in enumerate(candidates):
            int8_path = Path(scratch) / f"candidate-{index}.onnx"
            quantize_model(fp32_path, int8_path, card, calibration, settings)
            sessions[str(index)] = open_session(int8_path)
            checks.append(check_int8(sessions[str(index)], fp32_scored, feeds, truth))
        seconds = best_times(sessions, feeds, repeats=repeats)
    rows = len(truth)
    results = []
    for index, (settings, check) in enumerate(zip(candidates, checks, strict=True)):
        gate = judge(
            auc_fp32,
            check.metrics["auc"],
            label_agreement=check.label_agreement,
            int8_speedup=seconds["fp32"] / seconds[str(index)],
            batch_invariant=check.batch_invariant,
        )
        results.append(
            {
                **settings.describe(),
                "passed": gate.passed,
                "auc_delta": gate.auc_delta,
                "label_agreement": gate.label_agreement,
                "int8_speedup": gate.int8_speedup,
                "int8_rows_per_second": round(rows / seconds[str(index)]),
                "fp32_rows_per_second": round(rows / seconds["fp32"]),
                "score_abs_diff_max": round(check.score_abs_diff["max"], 6),
            }
        )
    return results


def record_sweep(
    version_dir: Path,
    card: Card,
    calibration: pa.Table,
    holdout: pa.Table,
    truth: np.ndarray,
    candidates: Sequence[QuantSettings] = CANDIDATES,
) -> Card:
    """Measure every candidate on a binary classifier's holdout and add the results to its card."""
    from pipelines.core.validate import validate
    from pipelines.modeling.artifacts import write_card
    from pipelines.modeling.gate import batch_feeds

    good = validate(holdout, card).good
    results = sweep_quantization(
        version_dir / card.signature_file("full"),
        card,
        validate(calibration, card).good,
        batch_feeds(card, good),
        truth,
        candidates=candidates,
    )
    updated = card.model_copy(update={"quantization": {**card.quantization, "sweep": results}})
    write_card(version_dir, updated)
    return updated
