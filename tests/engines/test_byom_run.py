"""Imported models of every exporter shape, scored on Beam: stored outputs equal onnxruntime's bit for bit,
whatever the shard and batch size, and read back equal through the CLI, the HTTP API and SQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.dataset as ds
import pytest

from pipelines.api import create_app
from pipelines.core.card import load_card
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings
from pipelines.store.db import connection
from tests import byom
from tests.api.conftest import live_server
from tests.conftest import subprocess_env

pytestmark = pytest.mark.slow
NAMES = [shape.name for shape in byom.SHAPES]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, migrated_url: str) -> dict[str, object]:
    """Every shape imported into one models folder and scored (and published) into one cache."""
    root = tmp_path_factory.mktemp("byom_run")
    folders = byom.import_all(root / "models", root)
    source = byom.scoring_input(root / "input")
    settings = Settings(database_url=migrated_url, home=root / "home", models_dir=root / "models", workers=2)
    runs = {
        name: run_job(settings, RunRequest(model=name, input=source, shard_rows=120, publish=True))
        for name in NAMES
    }
    return {"root": root, "folders": folders, "source": source, "settings": settings, "runs": runs}


def _expected(world: dict[str, Any], name: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    folder = world["folders"][name]  # type: ignore[index]
    card = load_card(folder)
    table = ds.dataset(world["source"], format="parquet").to_table()  # type: ignore[arg-type]
    return card, byom.direct_outputs(folder, card, table)


@pytest.mark.parametrize("name", NAMES)
def test_sql_outputs_equal_onnxruntime_bit_for_bit(
    world: dict[str, Any], name: str, migrated_url: str
) -> None:
    card, expected = _expected(world, name)
    with connection(migrated_url) as conn:
        rows = conn.execute(
            "SELECT key, outputs FROM predictions_current WHERE model = %s", (name,)
        ).fetchall()
    assert len(rows) == len(expected) >= 498  # two rows have a null or short feature
    assert all(byom.equal_to_stored(expected[key], outputs, card) for key, outputs in rows)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_do_not_depend_on_shard_or_batch_size(
    world: dict[str, Any], name: str, migrated_url: str
) -> None:
    settings: Settings = world["settings"]  # type: ignore[assignment]
    other = settings.model_copy(update={"batch_rows": 13})
    again = run_job(other, RunRequest(model=name, input=world["source"], shard_rows=37, rerun=True))  # type: ignore[arg-type]
    first = byom.stored_outputs(migrated_url, world["runs"][name].run_id)  # type: ignore[index]
    assert again.run_id != world["runs"][name].run_id  # type: ignore[index]
    assert byom.stored_outputs(migrated_url, again.run_id) == first


def test_cli_lookup_json_returns_every_output(world: dict[str, Any], migrated_url: str) -> None:
    card, expected = _expected(world, "recommender")
    keys = sorted(expected)[:3]
    env = subprocess_env(
        migrated_url, world["root"] / "cli_home", PREDCACHE_MODELS_DIR=str(world["root"] / "models")
    )  # type: ignore[operator]
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "lookup", "--model", "recommender", "--json", *keys],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["key"] for o in objects] == keys
    assert all(byom.equal_to_stored(expected[o["key"]], o["outputs"], card) for o in objects)
    assert all(len(o["outputs"]["items"]) == byom.TOP_K for o in objects)


def test_http_single_and_batch_lookups_return_every_output(world: dict[str, Any], migrated_url: str) -> None:
    settings = Settings(database_url=migrated_url, home=world["root"] / "api_home", api_keys="")  # type: ignore[operator]
    with live_server(create_app(settings)) as base, httpx.Client(base_url=base, timeout=30) as client:
        listed = {m["model"]: m["version"] for m in client.get("/v1/models").json()["models"]}
        assert listed == dict.fromkeys(NAMES, "1")
        for name in NAMES:
            card, expected = _expected(world, name)
            keys = sorted(expected)[:4]
            one = client.get(f"/v1/models/{name}/predictions/{keys[0]}").json()
            assert byom.equal_to_stored(expected[keys[0]], one["outputs"], card)
            batch = client.post(f"/v1/models/{name}/predictions:batchGet", json={"keys": keys}).json()
            assert [r["status"] for r in batch["results"]] == ["FOUND"] * 4
            assert all(byom.equal_to_stored(expected[r["key"]], r["outputs"], card) for r in batch["results"])
            assert np.float32(one["score"]) == np.float32(
                expected[keys[0]][card.score_spec.output][card.score_spec.index or 0]
                if card.score_spec.index is not None
                else np.max(expected[keys[0]][card.score_spec.output])
            )


def test_models_list_shows_every_model_with_its_active_version(
    world: dict[str, Any], migrated_url: str
) -> None:
    root: Path = world["root"]  # type: ignore[assignment]
    env = subprocess_env(migrated_url, root / "cli_home", PREDCACHE_MODELS_DIR=str(root / "models"))
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "models", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    listed = [json.loads(line) for line in out.splitlines()]
    assert {(m["model"], m["version"], m["active"]) for m in listed} == {(name, "1", True) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_online_compute_of_every_row_equals_the_batch_cache(
    world: dict[str, Any], name: str, migrated_url: str
) -> None:
    card = load_card(world["folders"][name])
    table = ds.dataset(world["source"], format="parquet").to_table()
    rows = [{"key": str(r.pop(card.key)), **r} for r in table.select([card.key, *card.columns]).to_pylist()]
    app = create_app(
        Settings(
            database_url=migrated_url, home=world["root"] / "api_home", models_dir=world["root"] / "models"
        )
    )
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        online, cached = [], []
        for start in range(0, len(rows), 250):
            chunk = rows[start : start + 250]
            body = {"rows": json.loads(json.dumps(chunk))}
            online += client.post(f"/v1/models/{name}/predictions:compute", json=body).json()["results"]
            keys = {"keys": [row["key"] for row in chunk]}
            cached += client.post(f"/v1/models/{name}/predictions:batchGet", json=keys).json()["results"]
    answered = [(o, c) for o, c in zip(online, cached, strict=True) if c["status"] == "FOUND"]
    assert len(answered) >= 498 and all(o["status"] == "COMPUTED" for o, _ in answered)
    fields = ("score", "label", "outputs", "version")
    assert [tuple(o[f] for f in fields) for o, _ in answered] == [
        tuple(c[f] for f in fields) for _, c in answered
    ]
    assert all(
        o["status"] == "REJECTED" for o, c in zip(online, cached, strict=True) if c["status"] != "FOUND"
    )
