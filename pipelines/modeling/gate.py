"""The quantization gate: an int8 model ships as ``default`` only if it scores like fp32 and is faster.

Both models score the same holdout (rows the model did not train on). The int8 model passes when
its AUC is within ``MAX_AUC_DELTA`` of fp32, its labels agree with fp32's on at least
``MIN_LABEL_AGREEMENT`` of the rows, it is at least ``MIN_INT8_SPEEDUP`` times as fast (best of
``TIMING_REPEATS`` passes over the holdout in thread CPU time, one intra-op thread, the models
interleaved), and a row's score does not depend on its batch-mates (``INVARIANCE_ROWS`` rows scored
one at a time must equal the same rows scored as one batch, bit for bit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.core.card import QuantizationGate
from pipelines.core.model import to_feed
from pipelines.settings import DEFAULT_BATCH_ROWS

if TYPE_CHECKING:
    import onnxruntime as ort
    import pyarrow as pa

    from pipelines.core.card import Card

MAX_AUC_DELTA = 0.01
MIN_LABEL_AGREEMENT = 0.98
MIN_INT8_SPEEDUP = 1.0
TIMING_REPEATS = 30
TIMING_THREADS = 1
INVARIANCE_ROWS = 256
THRESHOLDS: dict[str, float] = {
    "max_abs_auc_delta": MAX_AUC_DELTA,
    "min_label_agreement": MIN_LABEL_AGREEMENT,
    "min_int8_speedup": MIN_INT8_SPEEDUP,
    "batch_invariance_rows": INVARIANCE_ROWS,
}

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Scored:
    """The outputs of one model over the holdout."""

    score: np.ndarray
    label: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """Everything the gate measured; ``gate`` is what the card records."""

    metrics: dict[str, dict[str, float]]
    timings: dict[str, Any]
    score_abs_diff: dict[str, float]
    batch_invariant: bool
    gate: QuantizationGate


def open_session(path: Path, *, threads: int = TIMING_THREADS) -> ort.InferenceSession:
    """A fresh, uncached onnxruntime session (builds must not reuse a scorer's cached one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # exporters' loose declared shapes make ORT warn on every run
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch_feeds(card: Card, table: pa.Table, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> list[Feed]:
    """``table`` as the scorer feeds it: onnxruntime feeds of ``batch_rows`` rows each."""
    return [to_feed(card, table.slice(start, batch_rows)) for start in range(0, table.num_rows, batch_rows)]


def run(session: ort.InferenceSession, feeds: list[Feed]) -> Scored:
    """Score every batch; ``score`` float32 [N], ``label`` int64 [N]."""
    scores, labels = [], []
    for feed in feeds:
        score, label = session.run(["score", "label"], feed)
        scores.append(np.asarray(score, dtype=np.float32).reshape(-1))
        labels.append(np.asarray(label, dtype=np.int64).reshape(-1))
    return Scored(score=np.concatenate(scores), label=np.concatenate(labels))


def binary_metrics(truth: np.ndarray, scored: Scored) -> dict[str, float]:
    """AUC and log loss of ``score``, accuracy of ``label``, against 0/1 ``truth``."""
    from sklearn.metrics import log_loss, roc_auc_score

    return {
        "auc": float(roc_auc_score(truth, scored.score)),
        "log_loss": float(log_loss(truth, scored.score.astype(np.float64), labels=[0, 1])),
        "accuracy": float(np.mean(scored.label == truth)),
    }


def best_times(
    sessions: dict[str, ort.InferenceSession], feeds: list[Feed], *, repeats: int
) -> dict[str, float]:
    """Best time of one pass over ``feeds`` per session, the sessions interleaved so drift hits all.

    Time is the calling thread's CPU time: a one-thread session runs inline, so this is its compute
    time, and other processes sharing the CPU (a test suite, a database) do not count against it.
    """
    best = dict.fromkeys(sessions, float("inf"))
    for session in sessions.values():  # warm-up: first runs allocate
        session.run(None, feeds[0])
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.thread_time()
            for feed in feeds:
                session.run(None, feed)
            best[name] = min(best[name], time.thread_time() - start)
    return best


def is_batch_invariant(session: ort.InferenceSession, feed: Feed, *, rows: int = INVARIANCE_ROWS) -> bool:
    """True when the first ``rows`` rows score bit-identically alone and as one batch."""
    head = {name: values[:rows] for name, values in feed.items()}
    (batch,) = session.run(["score"], head)
    count = len(np.asarray(batch).reshape(-1))
    alone = [session.run(["score"], {n: v[i : i + 1] for n, v in head.items()})[0] for i in range(count)]
    batch = np.asarray(batch, dtype=np.float32).reshape(-1)
    return bool(np.array_equal(batch, np.asarray(alone, dtype=np.float32).reshape(-1)))


@dataclass(frozen=True)
class Int8Check:
    """How an int8 model's holdout outputs compare with fp32's (everything but speed)."""

    metrics: dict[str, float]
    label_agreement: float
    score_abs_diff: dict[str, float]
    batch_invariant: bool


def check_int8(
    session: ort.InferenceSession, fp32: Scored, feeds: list[Feed], truth: np.ndarray
) -> Int8Check:
    """Score the holdout with an int8 session and compare it with the fp32 outputs ``fp32``."""
    scored = run(session, feeds)
    diff = np.abs(scored.score.astype(np.float64) - fp32.score)
    return Int8Check(
        metrics=binary_metrics(truth, scored),
        label_agreement=float(np.mean(scored.label == fp32.label)),
        score_abs_diff={
            q: float(np.quantile(diff, p)) for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
        },
        batch_invariant=is_batch_invariant(session, feeds[0]),
    )


def timings(seconds: dict[str, float], rows: int, *, batches: int, repeats: int) -> dict[str, Any]:
    """The card's record of a timing run (``seconds``: model -> best pass)."""
    return {
        "rows": rows,
        "batches": batches,
        "threads": TIMING_THREADS,
        "repeats": repeats,
        "clock": "thread CPU time, best pass",
        **{f"{name}_seconds": round(value, 6) for name, value in seconds.items()},
        **{f"{name}_rows_per_second": round(rows / value) for name, value in seconds.items()},
    }


def compare(
    fp32_path: Path, int8_path: Path, feeds: list[Feed], truth: np.ndarray, *, repeats: int = TIMING_REPEATS
) -> Comparison:
    """Score the holdout with both models, time them, and judge the int8 one.

    Args:
        fp32_path: The float model.
        int8_path: Its quantized version.
        feeds: The holdout batches (see ``batch_feeds``).
        truth: The holdout's 0/1 labels, in feed order.
        repeats: Timed passes per model; the best one counts.
    """
    fp32, int8 = open_session(fp32_path), open_session(int8_path)
    fp32_scored = run(fp32, feeds)
    fp32_metrics = binary_metrics(truth, fp32_scored)
    check = check_int8(int8, fp32_scored, feeds, truth)
    seconds = best_times({"fp32": fp32, "int8": int8}, feeds, repeats=repeats)
    gate = judge(
        fp32_metrics["auc"],
        check.metrics["auc"],
        label_agreement=check.label_agreement,
        int8_speedup=seconds["fp32"] / seconds["int8"],
        batch_invariant=check.batch_invariant,
    )
    return Comparison(
        metrics={"fp32": fp32_metrics, "int8": check.metrics},
        timings=timings(seconds, len(truth), batches=len(feeds), repeats=repeats),
        score_abs_diff=check.score_abs_diff,
        batch_invariant=check.batch_invariant,
        gate=gate,
    )


def judge(
    auc_fp32: float, auc_int8: float, *, label_agreement: float, int8_speedup: float, batch_invariant: bool
) -> QuantizationGate:
    """Apply the thresholds; the reason names every check and, on failure, what ships instead."""
    delta = auc_int8 - auc_fp32
    checks = [
        (abs(delta) <= MAX_AUC_DELTA, f"|AUC delta| {abs(delta):.4f} vs max {MAX_AUC_DELTA}"),
        (
            label_agreement >= MIN_LABEL_AGREEMENT,
            f"label agreement {label_agreement:.4f} vs min {MIN_LABEL_AGREEMENT}",
        ),
        (int8_speedup >= MIN_INT8_SPEEDUP, f"int8 speedup {int8_speedup:.2f}x vs min {MIN_INT8_SPEEDUP}x"),
        (
            batch_invariant,
            f"int8 scores {'' if batch_invariant else 'NOT '}bit-identical alone vs in a batch of "
            f"{INVARIANCE_ROWS}",
        ),
    ]
    failed = [text for ok, text in checks if not ok]
    if failed:
        reason = "failed: " + "; ".join(failed) + "; fp32 (model.onnx) ships as the default signature"
    else:
        reason = "passed: " + "; ".join(text for _, text in checks) + "; int8 ships as the default signature"
    return QuantizationGate(
        passed=not failed,
        auc_fp32=round(auc_fp32, 6),
        auc_int8=round(auc_int8, 6),
        auc_delta=round(delta, 6),
        label_agreement=round(label_agreement, 6),
        int8_speedup=round(int8_speedup, 4),
        thresholds=THRESHOLDS,
        reason=reason,
    )
