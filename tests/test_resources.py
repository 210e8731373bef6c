"""Shipped files are found in a checkout; an installed predcache seeds its models folder once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import resources
from pipelines.errors import ConfigError
from pipelines.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_a_checkout_reads_its_own_folders() -> None:
    assert resources.in_checkout()
    assert resources.sql_dir() == REPO / "sql" and resources.bundled_models_dir() == REPO / "models"
    assert resources.dags_config_template() == REPO / "dags" / "predcache_dags.yaml"
    assert resources.default_models_dir(Path("/elsewhere")) == REPO / "models"


def test_seeding_copies_each_bundled_version_once_and_never_touches_an_existing_one(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert resources.seed_models(models) == ["flights_delay/1"]
    card = models / "flights_delay" / "1" / "card.json"
    assert card.read_bytes() == (REPO / "models" / "flights_delay" / "1" / "card.json").read_bytes()
    assert (models / "flights_delay" / "recipe.py").is_file()
    card.write_text("{}")
    assert resources.seed_models(models) == [] and card.read_text() == "{}"


def test_seeding_a_folder_that_cannot_be_written_says_what_to_set(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match="PREDCACHE_MODELS_DIR"):
        resources.seed_models(tmp_path / "models")


def test_outside_a_checkout_models_default_to_home_and_are_seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "_CHECKOUT", tmp_path / "site-packages")
    monkeypatch.setattr(resources, "bundled_models_dir", lambda: REPO / "models")
    monkeypatch.delenv("PREDCACHE_MODELS_DIR", raising=False)
    settings = Settings(home=tmp_path / "home")
    assert settings.models_dir == tmp_path / "home" / "models"
    assert (settings.models_dir / "flights_delay" / "1" / "model.int8.onnx").is_file()
    assert Settings(home=tmp_path / "home", models_dir=tmp_path / "mine").models_dir == tmp_path / "mine"
