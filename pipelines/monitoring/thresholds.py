"""Alert thresholds of one model: light (pydantic only), so DAG configs can hold them at parse time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipelines.settings import (
    DEFAULT_ALERT_METRIC_MARGIN,
    DEFAULT_ALERT_MIN_LABELS,
    DEFAULT_ALERT_PSI,
    DEFAULT_ALERT_REJECT_FRACTION,
    DEFAULT_ALERT_STALE_HOURS,
)

#: Metrics where lower is better; the others (auc, accuracy) alert when they fall.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})


class Thresholds(BaseModel):
    """The alert thresholds of one model (settings' defaults, overridden per model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(DEFAULT_ALERT_PSI, ge=0.0)
    #: Columns whose drift is expected by construction (e.g. ``day_of_week`` of a daily partition).
    drift_ignore: tuple[str, ...] = ()
    metric: str = "auc"
    metric_margin: float = Field(DEFAULT_ALERT_METRIC_MARGIN, ge=0.0)
    stale_hours: float = Field(DEFAULT_ALERT_STALE_HOURS, gt=0.0)
    reject_fraction: float = Field(DEFAULT_ALERT_REJECT_FRACTION, ge=0.0, le=1.0)
    min_labels: int = Field(DEFAULT_ALERT_MIN_LABELS, ge=1)
