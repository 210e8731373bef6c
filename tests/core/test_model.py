from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.model import load_model, model_versions, to_feed
from pipelines.errors import UnknownModelError


def test_to_feed_gives_n_by_1_tensors_in_card_dtypes(toy_models_dir: Path) -> None:
    model = load_model(toy_models_dir, "toy")
    table = pa.table({"id": ["a", "b"], "x": pa.array([1.5, 2.5], pa.float32()), "n": [1, 2]})
    feed = to_feed(model.card, table)
    assert feed["x"].shape == (2, 1) and feed["x"].dtype == np.float32 and feed["n"].dtype == np.int64


def test_string_feed_equals_python_strings_for_chunked_and_repeated_values() -> None:
    from pipelines.core.model import _strings

    column = pa.chunked_array([pa.array(["JFK", "EWR", "JFK"]), pa.array(["LGA", "EWR"])])
    assert _strings(column).tolist() == ["JFK", "EWR", "JFK", "LGA", "EWR"]


def test_dot_folders_are_builds_in_progress_not_versions(toy_models_dir: Path) -> None:
    hidden = toy_models_dir / "toy" / ".building-toy-2"
    hidden.mkdir()
    (hidden / "card.json").write_text("{}")
    assert model_versions(toy_models_dir, "toy") == ["1"]


def test_unknown_version_names_the_versions_that_exist(toy_models_dir: Path) -> None:
    with pytest.raises(UnknownModelError, match="unknown version '7' of model 'toy'; available: toy/1"):
        load_model(toy_models_dir, "toy", "7")
