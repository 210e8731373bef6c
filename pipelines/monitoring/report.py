"""The per-model HTML monitoring report: one self-contained file (plotly.js inlined, no network).

Plots: runs over time (rows, throughput, rejects by reason), the score distribution against the
card's reference, PSI per input over time with the alert threshold, the realised metric per week
with its alert threshold, and the version/publish history.
"""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, UnknownModelError
from pipelines.monitoring import history
from pipelines.monitoring.alerts import holdout_metric, thresholds_for
from pipelines.monitoring.thresholds import LOWER_IS_BETTER
from pipelines.settings import Settings
from pipelines.store.cache import cache_url
from pipelines.store.db import connection

REPORT_FILE = "report.html"
PLOT_HEIGHT = 380


def _score_histograms(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The card's reference score histogram and the served one on its buckets (or the newest run's)."""
    ref = data["reference"].get("score")
    cur = data["current"].get("score")
    if ref and ref.get("histogram", {}).get("counts"):
        found = [("reference (card)", ref)]
        if cur and cur.get("histogram", {}).get("edges") == ref["histogram"]["edges"]:
            found.append(("served (all runs)", cur))
        return found
    newest = data["newest_outputs"].get("score")
    if newest and newest.get("histogram", {}).get("counts"):
        return [("served (newest run; the card has no reference)", newest)]
    return []


def _figures(data: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures: list[tuple[str, Any]] = []
    runs = data["runs"]
    days = [r["day"] for r in runs]

    fig = make_subplots(
        rows=3, cols=1, shared_xaxes=True, subplot_titles=("Rows", "Rows per second", "Rejects by reason")
    )
    fig.add_trace(go.Bar(x=days, y=[r["rows_out"] for r in runs], name="scored"), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=days, y=[r["rows_per_s"] for r in runs], mode="lines+markers", name="rows/s"),
        row=2,
        col=1,
    )
    reasons = sorted({reason for per_run in data["rejects"].values() for reason in per_run})
    for reason in reasons:
        fig.add_trace(
            go.Bar(
                x=days,
                y=[data["rejects"].get(r["run_id"], {}).get(reason, 0) for r in runs],
                name=reason[:40],
            ),
            row=3,
            col=1,
        )
    fig.update_layout(barmode="stack", height=PLOT_HEIGHT * 2)
    figures.append(("Runs over time", fig))

    fig = go.Figure()
    for name, stats in _score_histograms(data):
        edges, counts = stats["histogram"]["edges"], stats["histogram"]["counts"]
        labels = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        total = sum(counts) or 1
        fig.add_trace(go.Bar(x=labels, y=[c / total for c in counts], name=name))
    fig.update_layout(
        barmode="group", height=PLOT_HEIGHT, yaxis_title="share of rows", xaxis_title="score bucket"
    )
    figures.append(("Score distribution against the reference", fig))

    fig = go.Figure()
    columns = sorted({name for r in runs for name in (r["drift"] or {})})
    for name in columns:
        fig.add_trace(
            go.Scatter(
                x=days, y=[(r["drift"] or {}).get(name) for r in runs], mode="lines+markers", name=name
            )
        )
    fig.add_hline(
        y=data["thresholds"].psi, line_dash="dash", annotation_text=f"alert PSI {data['thresholds'].psi}"
    )
    fig.update_layout(height=PLOT_HEIGHT, yaxis_title="PSI vs card reference", yaxis_type="log")
    figures.append(("Drift (PSI) per input and score, per run", fig))

    weeks = data["weeks"]
    metric = data["thresholds"].metric
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[w["scope_key"] for w in weeks],
            y=[w["metrics"].get(metric) for w in weeks],
            mode="lines+markers",
            name=f"realised {metric}",
            text=[f"{w['matched']} labels" for w in weeks],
        )
    )
    if data["holdout"] is not None:
        fig.add_hline(y=data["holdout"], line_dash="dot", annotation_text=f"holdout {data['holdout']:.3f}")
        fig.add_hline(
            y=data["metric_threshold"], line_dash="dash", line_color="red", annotation_text="alert threshold"
        )
    fig.update_layout(height=PLOT_HEIGHT, yaxis_title=metric, xaxis_title="week (Monday)")
    figures.append((f"Realised {metric} per week", fig))

    pubs = data["publishes"]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p["published_at"] for p in pubs],
            y=[p["version"] for p in pubs],
            mode="markers",
            marker={
                "size": [6 + min(p["runs"], 30) for p in pubs],
                "color": ["red" if p["rolled_back_at"] else "green" for p in pubs],
            },
            text=[
                f"publish {p['publish_id']}: {p['runs']} run(s)"
                + (" (rolled back)" if p["rolled_back_at"] else "")
                for p in pubs
            ],
            name="publishes",
        )
    )
    fig.update_layout(
        height=PLOT_HEIGHT, yaxis_title="version", yaxis_type="category", xaxis_title="published at"
    )
    figures.append(("Version and publish history", fig))
    return figures


def _collect(settings: Settings, model: str) -> dict[str, Any]:
    with connection(cache_url(settings)) as conn:
        card = history.active_card(conn, model)
        if card is None:
            known = [r[0] for r in conn.execute("SELECT DISTINCT model FROM model_versions ORDER BY 1")]
            raise UnknownModelError(model, available=known)
        limits = thresholds_for(settings, model)
        holdout = holdout_metric(card, limits.metric)
        margin = limits.metric_margin if limits.metric not in LOWER_IS_BETTER else -limits.metric_margin
        merged = history.merged_stats(conn, model, by_week=False)
        return {
            "card": card,
            "runs": history.runs(conn, model),
            "rejects": history.reject_reasons(conn, model),
            "reference": card.reference_stats,
            "current": merged.get(date.min, {}),
            "newest_outputs": history.newest_output_stats(conn, model),
            "weeks": history.evaluations(conn, model, "week"),
            "publishes": history.publishes(conn, model),
            "alerts": history.alerts(conn, model),
            "thresholds": limits,
            "holdout": holdout,
            "metric_threshold": None if holdout is None else holdout - margin,
        }


def _alerts_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "<p>No alerts fired.</p>"
    rows = "".join(
        f"<tr><td>{a['fired_at']:%Y-%m-%d %H:%M}</td><td>{html.escape(a['condition'])}</td>"
        f"<td>{html.escape(a['subject'])}</td><td>{'yes' if a['delivered'] else 'no'}</td></tr>"
        for a in alerts[-50:]
    )
    return f"<table><tr><th>fired</th><th>condition</th><th>subject</th><th>delivered</th></tr>{rows}</table>"


def write_report(settings: Settings, *, model: str, out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` for ``model``; returns its path.

    Raises:
        PredcacheError: unknown model, or the output folder cannot be written.
    """
    data = _collect(settings, model)
    parts = []
    for index, (title, fig) in enumerate(_figures(data)):
        body = fig.to_html(full_html=False, include_plotlyjs=index == 0, div_id=f"plot-{index}")
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")
    card = data["card"]
    runs = data["runs"]
    span = f"{runs[0]['day']} .. {runs[-1]['day']}" if runs else "no runs yet"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>predcache report: {html.escape(model)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>predcache monitoring report: {html.escape(model)}</h1>
<p>Active card: version {html.escape(card.version)}; {len(runs)} run(s), days {span};
{len(data["publishes"])} publish(es); alert PSI {data["thresholds"].psi}.</p>
{"".join(parts)}
<section><h2>Alerts</h2>{_alerts_table(data["alerts"])}</section>
</body></html>
"""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / REPORT_FILE
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report to {out_dir} ({exc.strerror}); choose another --out"
        ) from exc
    return path
