"""The `predcache` CLI as users run it: a subprocess, one-line errors, machine-readable output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

COMMANDS = [
    [], ["demo"], ["db", "migrate"], ["data", "flights"], ["data", "synth"], ["models", "build"],
    ["models", "list"], ["models", "show"], ["run"], ["backfill"], ["publish"], ["rollback"], ["lookup"],
    ["runs", "list"], ["runs", "show"], ["serve"],
    ["labels", "load"], ["evaluate"], ["alerts", "check"], ["report"],
]  # fmt: skip


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture()
def env(database_url: str, tmp_path: Path, toy_models_dir: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    values.update(
        PREDCACHE_DATABASE_URL=database_url,
        PREDCACHE_HOME=str(tmp_path / "home"),
        PREDCACHE_MODELS_DIR=str(toy_models_dir),
    )
    return values


def _write(folder: Path, name: str, rows: int = 50, **overrides: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns: dict[str, object] = {
        "id": [f"{name}-{i}" for i in range(rows)],
        "x": np.linspace(-1, 1, rows),
        "n": np.arange(rows),
    }
    columns.update(overrides)
    path = folder / f"{name}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def _assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predcache: error:"), result.stderr[-2000:]
    assert fragment in lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "usage: predcache" in result.stdout


def test_run_json_then_lookup_json_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    _write(tmp_path / "in", "good")
    run = _cli(["run", "--model", "toy", "--input", str(tmp_path / "in"), "--publish", "--json"], env)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("model", "version", "rows_in", "rows_out", "rows_rejected")} == {
        "model": "toy", "version": "1", "rows_in": 50, "rows_out": 50, "rows_rejected": 0,
    }  # fmt: skip
    assert summary["run_id"] > 0 and summary["seconds"] > 0
    lookup = _cli(["lookup", "--model", "toy", "--json", "good-3", "missing"], env)
    found, missing = (json.loads(line) for line in lookup.stdout.strip().splitlines())
    assert found["found"] and found["version"] == "1" and 0 < found["score"] < 1 and found["computed_at"]
    assert missing == {**missing, "key": "missing", "found": False, "score": None}


def test_nan_features_and_duplicate_keys_become_rejects_with_reasons(
    env: dict[str, str], tmp_path: Path
) -> None:
    x = np.linspace(-1, 1, 50)
    x[3] = np.nan
    _write(tmp_path / "in", "bad", x=x, id=[f"bad-{min(i, 48)}" for i in range(50)])
    run = _cli(["run", "--model", "toy", "--input", str(tmp_path / "in"), "--json"], env)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["rows_out"], summary["rows_rejected"]) == (47, 3)
    show = json.loads(_cli(["runs", "show", str(summary["run_id"]), "--json"], env).stdout)
    assert show["reject_reasons"] == {"duplicate key: it occurs more than once": 2, "feature 'x' is NaN": 1}


@pytest.mark.parametrize(
    ("columns", "fragment"),
    [
        ({"id": None}, "has no key column 'id'"),
        ({"x": [str(i) for i in range(50)]}, "column 'x' has type string, model toy expects float32"),
        ({"n": np.linspace(0, 1, 50)}, "column 'n' has type double, model toy expects int64"),
    ],
    ids=["missing-key-column", "string-for-float", "float-for-int"],
)
def test_schema_errors_are_one_line_and_write_nothing(
    env: dict[str, str], tmp_path: Path, columns: dict[str, object], fragment: str
) -> None:
    overrides: dict[str, Any] = {k: v for k, v in columns.items() if v is not None}
    path = _write(tmp_path / "in", "schema", **overrides)
    if columns.get("id", 1) is None:
        pq.write_table(pq.read_table(path).drop_columns(["id"]), path)
    result = _cli(["run", "--model", "toy", "--input", str(tmp_path / "in")], env)
    _assert_one_line_error(result, fragment)
    listed = [json.loads(line) for line in _cli(["runs", "list", "--json"], env).stdout.splitlines()]
    assert all(run["input_uri"] != str((tmp_path / "in").resolve()) for run in listed)


def test_a_corrupt_parquet_file_is_one_line_error_naming_the_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    _write(tmp_path / "in", "fine")
    (tmp_path / "in" / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    result = _cli(["run", "--model", "toy", "--input", str(tmp_path / "in")], env)
    _assert_one_line_error(result, "broken.parquet is not a readable Parquet file")


def test_unknown_model_is_one_line_error_listing_models(env: dict[str, str], tmp_path: Path) -> None:
    _write(tmp_path / "in", "any")
    result = _cli(["run", "--model", "nope", "--input", str(tmp_path / "in")], env)
    _assert_one_line_error(result, "unknown model 'nope'; available: toy")


def test_card_that_disagrees_with_its_onnx_inputs_is_one_line_error(
    env: dict[str, str], tmp_path: Path, toy_models_dir: Path
) -> None:
    card_path = toy_models_dir / "toy" / "1" / "card.json"
    card = json.loads(card_path.read_text())
    card["inputs"][1] = {"name": "count", "dtype": "int64"}
    card_path.write_text(json.dumps(card))
    _write(tmp_path / "in", "cardcheck", count=np.arange(50))
    result = _cli(["run", "--model", "toy", "--input", str(tmp_path / "in")], env)
    _assert_one_line_error(result, "card input 'count' is not an input of model.onnx")


def test_a_tampered_onnx_file_fails_its_checksum(
    env: dict[str, str], tmp_path: Path, toy_models_dir: Path
) -> None:
    with (toy_models_dir / "toy" / "1" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    _write(tmp_path / "in", "tamper")
    result = _cli(["run", "--model", "toy", "--input", str(tmp_path / "in")], env)
    _assert_one_line_error(result, "the file changed after the build")


def test_missing_input_path_and_bad_dates_are_clear(env: dict[str, str], tmp_path: Path) -> None:
    _assert_one_line_error(
        _cli(["run", "--model", "toy", "--input", str(tmp_path / "nowhere")], env), "does not exist"
    )
    bad_date = _cli(["backfill", "--model", "toy", "--input-template", "x/{date}", "--start", "2013-13-01",
                     "--end", "2013-07-02"], env)  # fmt: skip
    assert bad_date.returncode == 2 and "'2013-13-01' is not a date" in bad_date.stderr


def test_backfill_skips_done_days_and_resumes_after_a_missing_day(
    env: dict[str, str], tmp_path: Path
) -> None:
    for day in ("2013-07-01", "2013-07-02", "2013-07-04"):
        _write(tmp_path / f"date={day}", day)
    args = [
        "backfill",
        "--model",
        "toy",
        "--input-template",
        str(tmp_path / "date={date}"),
        "--publish",
        "--json",
    ]
    first = _cli([*args, "--start", "2013-07-01", "--end", "2013-07-04"], env)
    _assert_one_line_error(first, "date=2013-07-03 does not exist")
    _write(tmp_path / "date=2013-07-03", "2013-07-03")
    second = _cli([*args, "--start", "2013-07-01", "--end", "2013-07-04"], env)
    assert second.returncode == 0, second.stderr[-2000:]
    days = [json.loads(line) for line in second.stdout.strip().splitlines()]
    assert [(d["date"], d["skipped"]) for d in days] == [
        ("2013-07-01", True), ("2013-07-02", True), ("2013-07-03", False), ("2013-07-04", False),
    ]  # fmt: skip
    lookup = _cli(["lookup", "--model", "toy", "--json", "2013-07-01-0", "2013-07-04-49"], env)
    assert all(json.loads(line)["found"] for line in lookup.stdout.strip().splitlines())


def test_publish_and_rollback_commands_move_the_active_version(env: dict[str, str], tmp_path: Path) -> None:
    _write(tmp_path / "in", "pub")
    assert _cli(["run", "--model", "toy", "--input", str(tmp_path / "in")], env).returncode == 0
    assert json.loads(_cli(["lookup", "--model", "toy", "--json", "pub-1"], env).stdout)["found"] is False
    published = _cli(["publish", "--model", "toy", "--version", "1"], env)
    assert published.returncode == 0 and "published toy/1" in published.stdout
    assert json.loads(_cli(["lookup", "--model", "toy", "--json", "pub-1"], env).stdout)["found"] is True
    rolled = _cli(["rollback", "--model", "toy"], env)
    assert rolled.returncode == 0 and "rolled back publish" in rolled.stdout
    assert json.loads(_cli(["lookup", "--model", "toy", "--json", "pub-1"], env).stdout)["found"] is False
    _assert_one_line_error(_cli(["rollback", "--model", "never-published"], env), "no publish to roll back")
