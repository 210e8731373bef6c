"""The HTML report renders its plots in a real headless Chromium, with no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.monitoring.evaluate import evaluate
from pipelines.monitoring.labels import load_labels
from pipelines.monitoring.report import write_report
from tests.monitoring.conftest import ToyCache, chromium, write_labels

PLOTS = 5


@pytest.fixture(scope="module")
def report(toy_cache: ToyCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    outcomes = {key: float(score > 0.5) for key, score in toy_cache.scores.items()}
    folder = tmp_path_factory.mktemp("report")
    labels = write_labels(folder / "labels" / "date=2013-07-01" / "part-0.parquet", outcomes)
    load_labels(toy_cache.settings, model="toy", source=labels.parent.parent, key="id", label="y")
    evaluate(toy_cache.settings, model="toy")
    return write_report(toy_cache.settings, model="toy", out_dir=folder / "out")


def test_the_report_is_one_self_contained_file(report: Path) -> None:
    html = report.read_text()
    assert not re.search(r"<script[^>]+src=", html)  # plotly.js is inlined, nothing to fetch
    assert html.count('class="plotly-graph-div"') == PLOTS


def test_every_plot_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    done = chromium(report, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # Once plotly.js ran, each figure's div holds <svg class="main-svg"> with its drawn traces.
    parts = re.split(r'id="plot-\d"', dom)[1:]
    assert len(parts) == PLOTS
    for part in parts:
        assert 'class="main-svg"' in part and re.search(r'class="[^"]*\btrace\b', part)
    assert dom.count("<path") > 50


def test_a_screenshot_of_the_report_is_written(report: Path, tmp_path: Path) -> None:
    shot = report.with_name("report.png")
    done = chromium(report, tmp_path / "profile", "--window-size=1280,3200", f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 20_000
