"""Alerts: drift, rejects, realised metric and staleness against per-model thresholds.

Each condition fires once per subject (the run, or the stale publish): the ``alerts`` table's
primary key (model, condition, subject) is the dedupe, taken before the webhook is called, so
observing or evaluating again never sends a second message (no alert storms). A webhook that
fails is logged and the alert stays recorded with ``delivered = false``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pipelines.core.card import Card
from pipelines.monitoring.thresholds import LOWER_IS_BETTER, Thresholds
from pipelines.settings import Settings
from pipelines.store.cache import cache_url
from pipelines.store.db import connection

log = logging.getLogger(__name__)


def thresholds_for(
    settings: Settings, model: str, overrides: Thresholds | dict[str, Any] | None = None
) -> Thresholds:
    """Thresholds of ``model``: settings, then ``PREDCACHE_ALERT_OVERRIDES[model]``, then ``overrides``."""
    values: dict[str, Any] = {
        "psi": settings.alert_psi,
        "metric_margin": settings.alert_metric_margin,
        "stale_hours": settings.alert_stale_hours,
        "reject_fraction": settings.alert_reject_fraction,
        "min_labels": settings.alert_min_labels,
    }
    values.update(settings.alert_overrides.get(model, {}))
    if isinstance(overrides, Thresholds):
        values.update(overrides.model_dump(exclude_unset=True))
    elif overrides:
        values.update(overrides)
    return Thresholds(**values)


@dataclass(frozen=True)
class Alert:
    """One fired alert (new: the webhook was called for it now)."""

    model: str
    condition: str
    subject: str
    payload: dict[str, Any]
    delivered: bool


def fire(
    conn: psycopg.Connection[Any],
    *,
    model: str,
    condition: str,
    subject: str,
    payload: dict[str, Any],
    webhook_url: str | None,
) -> Alert | None:
    """Record the alert and POST it to the webhook, unless this (model, condition, subject) already fired.

    Returns:
        The alert when it is new, None when it had already fired.
    """
    from pipelines.dagconfig import post_json

    body = {"event": "predcache_alert", "model": model, "condition": condition, "subject": subject, **payload}
    row = conn.execute(
        "INSERT INTO alerts (model, condition, subject, payload) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING alert_id",
        (model, condition, subject, Jsonb(body)),
    ).fetchone()
    if row is None:
        return None
    log.warning("predcache alert: %s %s (%s)", model, condition, subject)
    delivered = bool(webhook_url) and post_json(webhook_url or "", body)
    if delivered:
        conn.execute("UPDATE alerts SET delivered = true WHERE alert_id = %s", (row[0],))
    return Alert(model, condition, subject, body, delivered)


def check_run(
    settings: Settings, observed: dict[str, Any], *, thresholds: Thresholds | dict[str, Any] | None = None
) -> list[Alert]:
    """Drift and reject alerts of one observed run (``observe_run``'s result)."""
    model = str(observed["model"])
    limits = thresholds_for(settings, model, thresholds)
    subject = f"run:{observed['run_id']}"
    fired: list[Alert] = []
    with connection(cache_url(settings), autocommit=True) as conn:
        drifted = {
            name: round(value, 4)
            for name, value in observed["drift"].items()
            if value > limits.psi and name not in limits.drift_ignore
        }
        if drifted:
            alert = fire(
                conn,
                model=model,
                condition="drift",
                subject=subject,
                payload={"run_id": observed["run_id"], "threshold": limits.psi, "psi": drifted},
                webhook_url=settings.alert_webhook_url,
            )
            fired += [alert] if alert else []
        rows_in = int(observed["rows_in"] or 0)
        fraction = int(observed["rows_rejected"] or 0) / rows_in if rows_in else 0.0
        if fraction > limits.reject_fraction:
            alert = fire(
                conn,
                model=model,
                condition="rejects",
                subject=subject,
                payload={
                    "run_id": observed["run_id"],
                    "threshold": limits.reject_fraction,
                    "fraction": round(fraction, 4),
                },
                webhook_url=settings.alert_webhook_url,
            )
            fired += [alert] if alert else []
    return fired


def holdout_metric(card: Card, metric: str) -> float | None:
    """The card's holdout figure of ``metric`` for the default signature (``metrics.int8``/``fp32``)."""
    default = card.signatures.get("default")
    flavour = next(
        (name for name, file in card.signatures.items() if name != "default" and file == default), None
    )
    for source in (card.metrics.get(flavour or ""), card.metrics.get("holdout"), card.metrics):
        if isinstance(source, dict) and isinstance(source.get(metric), int | float):
            return float(source[metric])
    return None


def check_evaluations(
    settings: Settings, model: str, *, thresholds: Thresholds | dict[str, Any] | None = None
) -> list[Alert]:
    """Metric alerts: each evaluated run with enough labels whose metric is past the card's figure."""
    limits = thresholds_for(settings, model, thresholds)
    fired: list[Alert] = []
    with connection(cache_url(settings), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT e.run_id, e.matched, e.metrics ->> %s, v.card FROM evaluations e "
            "JOIN runs r ON r.run_id = e.run_id JOIN model_versions v ON v.version_id = r.version_id "
            "WHERE e.model = %s AND e.scope = 'run' AND e.matched >= %s",
            (limits.metric, model, limits.min_labels),
        ).fetchall()
        for run_id, matched, value, card in rows:
            reference = holdout_metric(Card.model_validate(card), limits.metric)
            if value is None or reference is None:
                continue
            realised = float(value)
            if limits.metric in LOWER_IS_BETTER:
                limit, bad = reference + limits.metric_margin, realised > reference + limits.metric_margin
            else:
                limit, bad = reference - limits.metric_margin, realised < reference - limits.metric_margin
            if bad:
                alert = fire(
                    conn,
                    model=model,
                    condition=f"metric:{limits.metric}",
                    subject=f"run:{run_id}",
                    payload={
                        "run_id": run_id,
                        "metric": limits.metric,
                        "value": realised,
                        "holdout": reference,
                        "threshold": round(limit, 6),
                        "labels": matched,
                    },
                    webhook_url=settings.alert_webhook_url,
                )
                fired += [alert] if alert else []
    return fired


def prediction_age(conn: psycopg.Connection[Any], model: str) -> tuple[int, datetime] | None:
    """(publish id, publish time) of the newest published run of the model's active version."""
    row = conn.execute(
        "SELECT pb.publish_id, pb.published_at FROM active_versions a "
        "JOIN runs r ON r.version_id = a.version_id AND r.publish_id IS NOT NULL "
        "JOIN publishes pb ON pb.publish_id = r.publish_id WHERE a.model = %s "
        "ORDER BY pb.publish_id DESC LIMIT 1",
        (model,),
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def check_staleness(
    settings: Settings,
    model: str,
    *,
    thresholds: Thresholds | dict[str, Any] | None = None,
    now: datetime | None = None,
) -> list[Alert]:
    """Staleness: the active version's newest publish is older than ``stale_hours`` (once per publish)."""
    limits = thresholds_for(settings, model, thresholds)
    with connection(cache_url(settings), autocommit=True) as conn:
        newest = prediction_age(conn, model)
        if newest is None:
            return []
        publish_id, published_at = newest
        hours = ((now or datetime.now(UTC)) - published_at).total_seconds() / 3600
        if hours <= limits.stale_hours:
            return []
        alert = fire(
            conn,
            model=model,
            condition="stale",
            subject=f"publish:{publish_id}",
            payload={
                "publish_id": publish_id,
                "published_at": published_at.isoformat(),
                "age_hours": round(hours, 2),
                "threshold": limits.stale_hours,
            },
            webhook_url=settings.alert_webhook_url,
        )
    return [alert] if alert else []
