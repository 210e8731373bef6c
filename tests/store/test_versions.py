"""Versions are immutable: a rebuilt model cannot reuse a registered version; runs record their artifact."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.shards import plan_shards
from pipelines.errors import ModelCardError
from pipelines.store import ledger
from pipelines.store.db import connection


def test_registering_a_rebuilt_model_under_a_registered_version_is_refused(
    migrated_url: str, tmp_path: Path, toy_model_builder
) -> None:  # type: ignore[no-untyped-def]
    toy_model_builder(tmp_path / "a", name="imm", weights=(0.5, 0.25))
    toy_model_builder(tmp_path / "b", name="imm", weights=(0.9, 0.1))
    with connection(migrated_url, autocommit=True) as conn:
        first = ledger.register_version(conn, load_model(tmp_path / "a", "imm"))
        assert ledger.register_version(conn, load_model(tmp_path / "a", "imm")) == first
        with pytest.raises(ModelCardError, match=r"imm/1 is registered with model.onnx sha256 .*new version"):
            ledger.register_version(conn, load_model(tmp_path / "b", "imm"))


def test_a_run_records_the_sha256_of_the_artifact_it_scores_with(
    migrated_url: str, toy_models_dir: Path
) -> None:
    model = load_model(toy_models_dir, "toy")
    with connection(migrated_url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        run_id = ledger.create_run(
            conn,
            version_id=version_id,
            model=model,
            engine="test",
            input_uri="/in/sha",
            fingerprint="f",
            shard_rows=10,
            shards=plan_shards(key_hash(pa.array(["a", "b"])), 10),
        )
        run = ledger.get_run(conn, run_id)
    assert run.artifact_sha256 == model.card.artifacts["model.onnx"].sha256
