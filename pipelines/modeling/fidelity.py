"""The generalised quantization gate: does the int8 graph score like the fp32 one, and is it faster?

Measured on holdout rows over the card's outputs: the largest absolute difference of ``score``
(also relative to the fp32 score's range), its Spearman rank correlation, the agreement of the
label output (or of the argmax of the output ``score`` is taken from), the task metric when true
labels are given (AUC for binary, accuracy for multi-class, RMSE for regression), batch invariance
(rows alone vs in one batch, bit for bit), and the int8 speed-up (``gate.best_times``).
int8 becomes the default signature only when every check passes.

Memory does not grow with the holdout's width of outputs or activations: both models score it in
batches keeping three numbers per row (``scoring.score_rows``), and the speed is timed on at most
``MAX_TIMING_ROWS`` rows, whose feeds are the only ones built ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.core.model import predict_outputs
from pipelines.modeling.gate import batch_feeds, best_times, timings
from pipelines.modeling.scoring import Scored, score_rows

if TYPE_CHECKING:
    import onnxruntime as ort
    import pyarrow as pa

    from pipelines.core.card import Card

MIN_SPEARMAN = 0.99
MIN_AGREEMENT = 0.99
#: Worst single row's |int8 - fp32| score over the fp32 score range. Measured on flights_delay's
#: 12,683 holdout rows: max 0.10, p99 0.057, AUC 0.7232 vs 0.7224, agreement 0.9905 (int8 faithful).
MAX_RELATIVE_SCORE_DIFF = 0.15
MAX_AUC_OR_ACCURACY_DROP = 0.01
MAX_RMSE_INCREASE = 0.05
MIN_INT8_SPEEDUP = 1.0
INVARIANCE_ROWS = 64
DEFAULT_TIMING_REPEATS = 10
#: Holdout rows the speed is timed on (the importer's largest default holdout, so an import without
#: ``--holdout`` times every holdout row; a larger holdout file is timed on its first rows).
MAX_TIMING_ROWS = 10_000
THRESHOLDS: dict[str, float] = {
    "min_spearman": MIN_SPEARMAN,
    "min_agreement": MIN_AGREEMENT,
    "max_relative_score_diff": MAX_RELATIVE_SCORE_DIFF,
    "max_auc_or_accuracy_drop": MAX_AUC_OR_ACCURACY_DROP,
    "max_rmse_increase_fraction": MAX_RMSE_INCREASE,
    "min_int8_speedup": MIN_INT8_SPEEDUP,
}


@dataclass(frozen=True)
class GateResult:
    """What the card records: every figure, whether int8 passed, and why."""

    passed: bool
    reason: str
    figures: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    timings: dict[str, Any]


def task_metrics(scored: Scored, truth: np.ndarray) -> dict[str, float]:
    """AUC (binary), accuracy (multi-class) or RMSE (regression) against the true labels."""
    from sklearn.metrics import roc_auc_score

    if scored.classes is None:
        return {"rmse": float(np.sqrt(np.mean((scored.score - truth.astype(np.float64)) ** 2)))}
    distinct = np.unique(truth)
    accuracy = float(np.mean(scored.classes == truth))
    if len(distinct) == 2:
        return {"auc": float(roc_auc_score(truth, scored.score)), "accuracy": accuracy}
    return {"accuracy": accuracy}


def batch_invariant(session: ort.InferenceSession, card: Card, holdout: pa.Table) -> bool:
    """True when the first rows' outputs are bit-identical scored alone and as one batch."""
    head = holdout.slice(0, INVARIANCE_ROWS)
    batch = predict_outputs(session, card, head, batch_rows=INVARIANCE_ROWS)
    alone = predict_outputs(session, card, head, batch_rows=1)
    return all(np.array_equal(batch[name], alone[name]) for name in batch)


def judge_int8(
    card: Card,
    fp32: ort.InferenceSession,
    int8: ort.InferenceSession,
    holdout: pa.Table,
    truth: np.ndarray | None,
    *,
    batch_rows: int,
    repeats: int = DEFAULT_TIMING_REPEATS,
) -> GateResult:
    """Compare ``int8`` with ``fp32`` on ``holdout`` (valid rows, coerced) and apply the thresholds."""
    from scipy.stats import spearmanr

    base = score_rows(fp32, card, holdout, batch_rows=batch_rows)
    quant = score_rows(int8, card, holdout, batch_rows=batch_rows)
    s32, s8 = base.score, quant.score
    diff = np.abs(s8 - s32)
    spread = float(np.max(s32) - np.min(s32)) if len(s32) else 0.0
    relative = float(diff.max() / spread) if spread > 0 else float(diff.max() > 0)
    rho = float(spearmanr(s32, s8).statistic) if len(s32) > 1 and np.ptp(s32) > 0 and np.ptp(s8) > 0 else 1.0
    figures: dict[str, Any] = {
        "rows": holdout.num_rows,
        "score_abs_diff_max": float(diff.max()) if len(diff) else 0.0,
        "score_abs_diff_p99": float(np.quantile(diff, 0.99)) if len(diff) else 0.0,
        "score_relative_diff_max": round(relative, 6),
        "score_spearman": round(rho, 6),
    }
    checks = [
        (
            rho >= MIN_SPEARMAN,
            f"score Spearman {rho:.4f} {'>=' if rho >= MIN_SPEARMAN else '<'} {MIN_SPEARMAN}",
        ),
        (
            relative <= MAX_RELATIVE_SCORE_DIFF,
            f"max score diff {relative:.4f} of the score range "
            f"{'<=' if relative <= MAX_RELATIVE_SCORE_DIFF else '>'} {MAX_RELATIVE_SCORE_DIFF}",
        ),
    ]
    classes32, classes8 = base.classes, quant.classes
    if classes32 is not None and classes8 is not None:
        agreement = float(np.mean(classes32 == classes8))
        figures["agreement"] = round(agreement, 6)
        checks.append(
            (
                agreement >= MIN_AGREEMENT,
                f"agreement {agreement:.4f} {'>=' if agreement >= MIN_AGREEMENT else '<'} {MIN_AGREEMENT}",
            )
        )
    metrics: dict[str, dict[str, float]] = {}
    if truth is not None:
        metrics = {"fp32": task_metrics(base, truth), "int8": task_metrics(quant, truth)}
        for name, value32 in metrics["fp32"].items():
            value8 = metrics["int8"][name]
            if name == "rmse":
                ok = value8 <= value32 * (1 + MAX_RMSE_INCREASE) + 1e-12
                checks.append((ok, f"RMSE {value8:.4g} vs fp32 {value32:.4g}"))
            else:
                ok = value32 - value8 <= MAX_AUC_OR_ACCURACY_DROP
                checks.append((ok, f"{name} {value8:.4f} vs fp32 {value32:.4f}"))
    invariant = batch_invariant(int8, card, holdout)
    figures["batch_invariant"] = invariant
    checks.append((invariant, f"int8 outputs {'' if invariant else 'NOT '}bit-identical alone vs in a batch"))
    timed = holdout.slice(0, MAX_TIMING_ROWS)
    feeds = batch_feeds(card, timed, batch_rows=batch_rows)
    seconds = best_times({"fp32": fp32, "int8": int8}, feeds, repeats=repeats)
    speedup = seconds["fp32"] / seconds["int8"]
    figures["int8_speedup"] = round(speedup, 4)
    checks.append(
        (
            speedup >= MIN_INT8_SPEEDUP,
            f"int8 speed-up {speedup:.2f}x {'>=' if speedup >= MIN_INT8_SPEEDUP else '<'} "
            f"{MIN_INT8_SPEEDUP}x",
        )
    )
    failed = [text for ok, text in checks if not ok]
    if failed:
        reason = "fp32 is the default: " + "; ".join(failed)
    else:
        reason = "int8 is the default: " + "; ".join(text for _, text in checks)
    return GateResult(
        passed=not failed,
        reason=reason,
        figures=figures,
        metrics=metrics,
        timings=timings(seconds, timed.num_rows, batches=len(feeds), repeats=repeats),
    )
