"""What the report and the story read back: runs, drift per run and per week, evaluations, publishes.

Weekly drift merges the week's per-run statistics (they share the card's reference buckets, so
``merge_stats`` adds them up exactly) and measures PSI on the merged week: a daily partition holds
one weekday, a week holds them all, so weekly PSI shows the drift that explains a weekly metric.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from pipelines.core.card import Card
from pipelines.core.stats import ColumnStats, drift, merge_stats

_DAY_IN_URI = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


def run_day(input_uri: str, created_at: datetime) -> date:
    """The day a run scored: its input's ``date=YYYY-MM-DD`` partition, else when it was created."""
    found = _DAY_IN_URI.search(input_uri)
    return date.fromisoformat(found.group(1)) if found else created_at.date()


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def active_card(conn: psycopg.Connection[Any], model: str) -> Card | None:
    """The card of the model's active version (else its newest registered one)."""
    row = conn.execute(
        "SELECT v.card FROM model_versions v LEFT JOIN active_versions a ON a.version_id = v.version_id "
        "WHERE v.model = %s ORDER BY (a.version_id IS NOT NULL) DESC, v.version_id DESC LIMIT 1",
        (model,),
    ).fetchone()
    return Card.model_validate(row[0]) if row else None


def runs(conn: psycopg.Connection[Any], model: str) -> list[dict[str, Any]]:
    """Every finished run of the model with its day, counts, throughput and drift (oldest day first)."""
    cur = conn.execute(
        "SELECT r.run_id, r.version, r.status, r.input_uri, r.created_at, r.rows_in, r.rows_out, "
        "r.rows_rejected, "
        "r.seconds, r.publish_id, s.drift FROM runs r LEFT JOIN run_stats s ON s.run_id = r.run_id "
        "WHERE r.model = %s AND r.status IN ('verified', 'published') ORDER BY r.run_id",
        (model,),
    )
    names = [d.name for d in cur.description or []]
    out = []
    for row in cur.fetchall():
        item = dict(zip(names, row, strict=True))
        item["day"] = run_day(item["input_uri"], item["created_at"])
        item["rows_per_s"] = (item["rows_in"] or 0) / item["seconds"] if item["seconds"] else None
        out.append(item)
    return sorted(out, key=lambda r: (r["day"], r["run_id"]))


def reject_reasons(conn: psycopg.Connection[Any], model: str) -> dict[int, dict[str, int]]:
    """run id -> reject reason -> rows."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for run_id, reason, n in conn.execute(
        "SELECT j.run_id, j.reason, count(*) FROM rejects j JOIN runs r ON r.run_id = j.run_id "
        "WHERE r.model = %s GROUP BY 1, 2",
        (model,),
    ):
        out[int(run_id)][str(reason)] = int(n)
    return dict(out)


def _latest_per_day(
    conn: psycopg.Connection[Any], model: str
) -> dict[date, tuple[dict[str, Any], dict[str, Any]]]:
    """day -> (input stats, output stats) of the newest observed run of that day."""
    out: dict[date, tuple[dict[str, Any], dict[str, Any]]] = {}
    for uri, created, inputs, outputs in conn.execute(
        "SELECT r.input_uri, r.created_at, s.input_stats, s.output_stats FROM run_stats s "
        "JOIN runs r ON r.run_id = s.run_id WHERE r.model = %s AND r.status IN ('verified', 'published') "
        "ORDER BY r.run_id",
        (model,),
    ):
        out[run_day(uri, created)] = (inputs, outputs)
    return out


def newest_output_stats(conn: psycopg.Connection[Any], model: str) -> dict[str, ColumnStats]:
    """Output statistics of the model's newest observed run."""
    row = conn.execute(
        "SELECT s.output_stats FROM run_stats s JOIN runs r ON r.run_id = s.run_id "
        "WHERE r.model = %s ORDER BY r.run_id DESC LIMIT 1",
        (model,),
    ).fetchone()
    return dict(row[0]) if row else {}


def merged_stats(
    conn: psycopg.Connection[Any], model: str, *, by_week: bool
) -> dict[date, dict[str, ColumnStats]]:
    """Input and output statistics merged per week (or over everything, under ``date.min``)."""
    groups: dict[date, list[dict[str, ColumnStats]]] = defaultdict(list)
    for day, (inputs, outputs) in _latest_per_day(conn, model).items():
        groups[monday(day) if by_week else date.min].append({**inputs, **outputs})
    merged: dict[date, dict[str, ColumnStats]] = {}
    for key, parts in groups.items():
        # Columns without a card reference (e.g. the predicted label) get their buckets from each
        # run's own data; only columns whose buckets agree in every part can be added up.
        common = [
            name for name in parts[0] if all(_same_buckets(parts[0][name], part.get(name)) for part in parts)
        ]
        merged[key] = merge_stats([{name: part[name] for name in common} for part in parts])
    return merged


def _same_buckets(first: ColumnStats, other: ColumnStats | None) -> bool:
    if other is None or other.get("kind") != first.get("kind"):
        return False
    return bool(other.get("histogram", {}).get("edges") == first.get("histogram", {}).get("edges"))


def weekly_drift(conn: psycopg.Connection[Any], model: str, card: Card) -> dict[date, dict[str, float]]:
    """Monday -> column -> PSI of the week's merged statistics against the card's reference."""
    return {
        week: drift(card.reference_stats, stats)
        for week, stats in sorted(merged_stats(conn, model, by_week=True).items())
    }


def evaluations(conn: psycopg.Connection[Any], model: str, scope: str) -> list[dict[str, Any]]:
    """Stored evaluations of one scope, in key order."""
    cur = conn.execute(
        "SELECT scope_key, run_id, day, version, labels, matched, coverage, metrics FROM evaluations "
        "WHERE model = %s AND scope = %s ORDER BY scope_key",
        (model, scope),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def publishes(conn: psycopg.Connection[Any], model: str) -> list[dict[str, Any]]:
    """Publish events, oldest first."""
    cur = conn.execute(
        "SELECT publish_id, version, prev_version, cardinality(run_ids) AS runs, published_at, "
        "rolled_back_at "
        "FROM publishes WHERE model = %s ORDER BY publish_id",
        (model,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def alerts(conn: psycopg.Connection[Any], model: str) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT condition, subject, delivered, fired_at, payload FROM alerts "
        "WHERE model = %s ORDER BY alert_id",
        (model,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
