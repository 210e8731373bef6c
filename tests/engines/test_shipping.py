"""What a job ships to cluster workers: the code archive, the Beam options, the model files, the errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.core.shards import plan_shards
from pipelines.engines import shipping
from pipelines.engines.beam import pipeline_options
from pipelines.engines.spec import JobSpec
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import DEFAULT_MODELS_DIR
from pipelines.store.db import connection

MODEL = "flights_delay"
DATAFLOW = ["--runner=DataflowRunner", "--project=p", "--region=europe-west1", "--temp_location=gs://b/tmp"]
FLINK = ["--runner=FlinkRunner", "--flink_master=flink:8081", "--environment_type=DOCKER"]


def _spec(tmp_path: Path, **engine_options: object) -> JobSpec:
    return JobSpec(
        database_url="postgresql://unused",
        models_dir=DEFAULT_MODELS_DIR,
        model=MODEL,
        version="1",
        signature="default",
        run_id=1,
        version_id=1,
        attempt=1,
        key="flight_id",
        columns=["flight_id"],
        files=[],
        shards=plan_shards(np.empty(0, np.int64), shard_rows=10),
        batch_rows=100,
        ort_threads=1,
        workers=1,
        engine_options={shipping.SHIP_DIR_OPTION: str(tmp_path / "ship"), **engine_options},
    )


def test_code_wheel_holds_the_package_and_its_requirements_and_is_built_once(tmp_path: Path) -> None:
    first = shipping.code_wheel(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert shipping.code_wheel(tmp_path) == first and first.stat().st_mtime_ns == stamp
    names = zipfile.ZipFile(first).namelist()
    assert "pipelines/engines/spark.py" in names and "pipelines/core/model.py" in names
    assert not [n for n in names if "__pycache__" in n or "/_shipped/" in n]
    metadata = zipfile.ZipFile(first).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert b"Requires-Dist: onnxruntime" in metadata and b"extra ==" not in metadata
    assert first.name.startswith("predcache-") and "+" in first.name


def test_code_zip_is_importable_by_a_python_that_lacks_predcache(tmp_path: Path, clean_env) -> None:  # type: ignore[no-untyped-def]
    archive = shipping.code_zip(tmp_path)
    assert "+" not in archive.name and archive.read_bytes() == shipping.code_wheel(tmp_path).read_bytes()
    probe = "\n".join(
        [
            "import sys",
            f"sys.path.insert(0, {str(archive)!r})",
            "import pipelines.core.keys as k",
            "print(k.__file__)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], env=clean_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith(str(archive)), result.stderr


@pytest.mark.parametrize("runner", [DATAFLOW, FLINK], ids=["dataflow", "flink"])
def test_a_remote_beam_runner_gets_the_code_wheel_as_extra_package_and_the_model_files(
    tmp_path: Path, runner: list[str]
) -> None:
    shipped = shipping.ship_beam(_spec(tmp_path, beam_args=runner))
    options = pipeline_options(shipped).get_all_options()
    (package,) = options["extra_packages"]
    assert Path(package).is_file() and Path(package).parent == tmp_path / "ship"
    assert options["runner"] == runner[0].split("=")[1] and options["direct_num_workers"] in (None, 1)
    files, digest = shipped.engine_options[shipping.MODEL_FILES_OPTION]
    assert set(files) == {"card.json", "model.int8.onnx"} and len(digest) == 16


def test_a_beam_job_that_brings_its_own_setup_file_gets_no_extra_package(tmp_path: Path) -> None:
    shipped = shipping.ship_beam(_spec(tmp_path, beam_args=[*DATAFLOW, "--setup_file=./setup.py"]))
    assert pipeline_options(shipped).get_all_options()["extra_packages"] is None
    assert shipping.MODEL_FILES_OPTION in shipped.engine_options


def test_the_direct_runner_ships_nothing(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert shipping.ship_beam(spec) is spec
    assert shipping.ship_beam(_spec(tmp_path, beam_args=["--runner=DirectRunner"])).engine_options == {
        shipping.SHIP_DIR_OPTION: str(tmp_path / "ship"),
        "beam_args": ["--runner=DirectRunner"],
    }


def test_a_worker_writes_the_shipped_model_once_and_reads_it_from_there(tmp_path: Path) -> None:
    shipped = shipping.ship_beam(_spec(tmp_path, beam_args=FLINK))
    local = shipping.localize_model(shipped)
    assert local.models_dir != DEFAULT_MODELS_DIR
    assert (local.models_dir / MODEL / "1" / "model.int8.onnx").read_bytes() == (
        DEFAULT_MODELS_DIR / MODEL / "1" / "model.int8.onnx"
    ).read_bytes()
    assert shipping.localize_model(shipped).models_dir == local.models_dir


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Traceback\nModuleNotFoundError: No module named 'onnxruntime'\n",
            "cannot import 'onnxruntime'",
        ),
        ("ModuleNotFoundError: No module named 'pydantic_settings.main'", "pip install 'pydantic-settings'"),
        ("ModuleNotFoundError: No module named 'pipelines'", "cannot import predcache"),
    ],
)
def test_a_missing_module_on_workers_becomes_one_line_naming_it(text: str, expected: str) -> None:
    message = shipping.missing_module_error(text, where="the workers")
    assert message is not None and expected in message and "\n" not in message


def test_other_worker_failures_are_not_called_missing_modules() -> None:
    assert shipping.missing_module_error("ValueError: bad value", where="the workers") is None


@pytest.mark.slow
def test_a_direct_runner_run_through_the_shipping_path_equals_a_plain_run(
    database_url, settings_for, flights_dir, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    day = flights_dir / "date=2013-07-03"
    plain = run_job(settings_for(database_url), RunRequest(model=MODEL, input=day, shard_rows=300))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the worker processes' temp folder
    # Worker processes (not the in-process threads small runs use): they read TMPDIR afresh.
    workers = {"in_process_max_rows": 0, "direct_running_mode": "multi_processing"}
    request = RunRequest(
        model=MODEL, input=day, shard_rows=300, rerun=True, engine_options={"ship": True, **workers}
    )
    shipped = run_job(settings_for(database_url), request)
    with connection(database_url) as conn:
        sql = "SELECT key, score, label FROM predictions WHERE run_id = %s"
        rows = [sorted(conn.execute(sql, (run,)).fetchall()) for run in (plain.run_id, shipped.run_id)]
    assert rows[0] == rows[1] and len(rows[0]) == plain.rows_out > 0
    assert list((tmp_path / "home" / "shipping").glob("predcache-*.whl"))
    assert list((tmp_path / "tmp" / "predcache-beam-models").glob(f"*/{MODEL}/1/model.int8.onnx"))
