"""The story on real data, short: a week of December 2013 backfilled and evaluated on its real
outcomes, then the next week fed with temperatures in Celsius, whose drift alerts reach a local
webhook receiver. ``make story`` runs the full July-December version."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipelines.monitoring.story import run_story
from pipelines.settings import DEFAULT_MODELS_DIR, Settings
from tests.monitoring.conftest import chromium

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_a_week_in_celsius_raises_drift_alerts_that_reach_the_webhook(
    database_url: str, tmp_path: Path, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = webhook
    settings = Settings(
        database_url=database_url,
        home=tmp_path / "home",
        models_dir=DEFAULT_MODELS_DIR,
        alert_webhook_url=url,
    )
    lines: list[str] = []
    told = run_story(
        settings,
        data_dir=tmp_path / "data",
        start=date(2013, 12, 9),
        end=date(2013, 12, 15),
        shifted_start=date(2013, 12, 16),
        out_dir=tmp_path / "out",
        say=lines.append,
    )
    print("\n".join(lines))
    (week,) = told.weeks
    assert week["week"] == "2013-12-09" and week["labels"] > 5_000 and 0.6 < week["auc"] < 0.8
    assert week["top_drift"]  # the inputs that explain the week, strongest first

    shifted = {
        int(str(body["subject"]).removeprefix("run:")): body
        for body in received
        if body["condition"] == "drift"
    }
    assert set(told.shifted_runs) <= set(shifted)
    assert all(shifted[run]["psi"]["temp"] > 2.0 for run in told.shifted_runs)  # type: ignore[index]
    assert min(told.shifted["temp_psi"]) > 2.0

    assert told.report is not None
    shot = told.report.with_name("report.png")
    done = chromium(told.report, tmp_path / "profile", "--window-size=1280,3200", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
