"""Finding and running model recipes; a reduced flights_delay build is reproducible byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.core.card import load_card
from pipelines.core.model import list_models, load_model
from pipelines.errors import ModelCardError, UnknownModelError
from pipelines.modeling import available_recipes, build_model

RECIPE = Path(__file__).resolve().parents[2] / "models" / "flights_delay" / "recipe.py"
TINY = {"max_train_rows": 3_000, "max_iter": 3}


def _recipe(models_dir: Path, name: str, source: str) -> None:
    (models_dir / name).mkdir(parents=True)
    (models_dir / name / "recipe.py").write_text(source)


def test_unknown_model_lists_the_available_recipes(tmp_path: Path) -> None:
    _recipe(tmp_path, "other", "def build(out_dir, *, name, version):\n    pass\n")
    assert available_recipes(tmp_path) == ["other"]
    with pytest.raises(UnknownModelError, match="available: other"):
        build_model("nope", tmp_path)


def test_recipe_without_build_function_is_rejected(tmp_path: Path) -> None:
    _recipe(tmp_path, "broken", "X = 1\n")
    with pytest.raises(ModelCardError, match="defines no `build"):
        build_model("broken", tmp_path)


def test_failed_build_keeps_the_existing_version(tmp_path: Path) -> None:
    _recipe(
        tmp_path, "m", "def build(out_dir, *, name, version):\n    (out_dir / 'card.json').write_text('{}')\n"
    )
    (tmp_path / "m" / "1").mkdir()
    (tmp_path / "m" / "1" / "keep.txt").write_text("old")
    with pytest.raises(ModelCardError):
        build_model("m", tmp_path)
    assert (tmp_path / "m" / "1" / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_reduced_flights_build_is_reproducible(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        models_dir = tmp_path / run
        (models_dir / "flights_delay").mkdir(parents=True)
        shutil.copy(RECIPE, models_dir / "flights_delay" / "recipe.py")
        version_dir = build_model("flights_delay", models_dir, version="7", options=TINY)
        card = load_card(version_dir)
        digests.append({name: entry.sha256 for name, entry in card.artifacts.items()})
        assert list_models(models_dir) == ["flights_delay"]
        assert load_model(models_dir, "flights_delay", "7").version == "7"
    assert digests[0] == digests[1]
