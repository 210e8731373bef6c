"""`predcache labels load`: COPY + one merge, idempotent, bad input is one line and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pipelines.monitoring.labels import load_labels
from tests.conftest import subprocess_env
from tests.monitoring.conftest import ToyCache, write_labels


def _cli(cache: ToyCache, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(
        cache.url, cache.folder / "home", PREDCACHE_MODELS_DIR=str(cache.settings.models_dir)
    )
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "labels", "load", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _labels(cache: ToyCache) -> list[tuple[str, float | None, object]]:
    with psycopg.connect(cache.url) as conn:
        return conn.execute(
            "SELECT key, label, as_of FROM labels WHERE model = 'toy' ORDER BY key"
        ).fetchall()


@pytest.fixture()
def clean(toy_cache: ToyCache) -> ToyCache:
    with psycopg.connect(toy_cache.url) as conn:
        conn.execute("DELETE FROM labels")
    return toy_cache


def test_loading_the_same_file_twice_changes_nothing(clean: ToyCache, tmp_path: Path) -> None:
    path = write_labels(tmp_path / "y.parquet", {"day1-1": 1.0, "day1-2": 0.0, "day1-3": None})
    first = load_labels(clean.settings, model="toy", source=path, key="id", label="y")
    stored = _labels(clean)
    second = load_labels(clean.settings, model="toy", source=path, key="id", label="y")
    assert (first.inserted, first.null_labels) == (3, 1)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 3)
    assert _labels(clean) == stored


def test_labels_of_keys_never_predicted_are_kept_and_counted(clean: ToyCache, tmp_path: Path) -> None:
    path = write_labels(tmp_path / "y.parquet", {"day1-1": 1.0, "nobody-1": 0.0, "nobody-2": 1.0})
    loaded = load_labels(clean.settings, model="toy", source=path, key="id", label="y")
    assert (loaded.unpredicted, loaded.inserted) == (2, 3)
    assert [row[0] for row in _labels(clean)] == ["day1-1", "nobody-1", "nobody-2"]


def test_a_changed_outcome_is_updated(clean: ToyCache, tmp_path: Path) -> None:
    load_labels(
        clean.settings,
        model="toy",
        source=write_labels(tmp_path / "a.parquet", {"day1-1": 0.0}),
        key="id",
        label="y",
    )
    again = load_labels(
        clean.settings,
        model="toy",
        source=write_labels(tmp_path / "b.parquet", {"day1-1": 1.0}),
        key="id",
        label="y",
    )
    assert again.updated == 1 and _labels(clean)[0][1] == 1.0


def test_cli_loads_a_csv_file_and_prints_counts(clean: ToyCache, tmp_path: Path) -> None:
    path = tmp_path / "y.csv"
    path.write_text("id,y\nday1-1,1\nday1-2,0\n")
    done = _cli(clean, "--model", "toy", "--input", str(path), "--key", "id", "--label", "y")
    assert done.returncode == 0, done.stderr
    assert "2 rows, 2 new" in done.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "nope", "--key", "id", "--label", "y"], "unknown model 'nope'"),
        (["--model", "toy", "--key", "flight", "--label", "y"], "has no column 'flight'"),
        (["--model", "toy", "--key", "id", "--label", "outcome"], "has no column 'outcome'"),
        (["--model", "toy", "--key", "id", "--label", "y", "--as-of", "yesterday"], "is not a timestamp"),
        (["--model", "toy", "--key", "id", "--label", "score3"], "are not 0 or 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    clean: ToyCache, tmp_path: Path, args: list[str], fragment: str
) -> None:
    path = tmp_path / "y.csv"
    path.write_text("id,y,score3\nday1-1,1,2\nday1-2,0,0\n")
    done = _cli(clean, "--input", str(path), *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and fragment in lines[0], done.stderr
    assert _labels(clean) == []
