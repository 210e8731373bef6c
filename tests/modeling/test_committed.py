"""The reference model shipped in models/flights_delay/1: intact, loadable, and batch-invariant in int8."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.core.card import load_card, verify_artifact
from pipelines.core.model import load_model
from pipelines.core.stats import column_stats, drift
from pipelines.data.flights import load_flights_table

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
VERSION_DIR = MODELS_DIR / "flights_delay" / "1"
MAX_ARTIFACT_BYTES = 1 << 20


@pytest.fixture(scope="module")
def july_rows() -> pa.Table:
    """4096 July flights with every model input present (what the scorer accepts)."""
    card = load_card(VERSION_DIR)
    table = load_flights_table(date(2013, 7, 1), date(2013, 7, 7))
    present = [pc.invert(pc.is_null(table[name], nan_is_null=True)) for name in card.input_names]
    mask = present[0]
    for column in present[1:]:
        mask = pc.and_(mask, column)
    return table.filter(mask).slice(0, 4_096)


def test_artifacts_match_the_card_checksums_and_are_small() -> None:
    card = load_card(VERSION_DIR)
    assert set(card.artifacts) == {"model.onnx", "model.int8.onnx"}
    for file_name, entry in card.artifacts.items():
        assert (
            verify_artifact(card, VERSION_DIR, file_name).stat().st_size == entry.bytes < MAX_ARTIFACT_BYTES
        )


@pytest.mark.parametrize("signature", ["default", "full", "int8"])
def test_every_signature_loads(signature: str) -> None:
    model = load_model(MODELS_DIR, "flights_delay", signature=signature, threads=1)
    assert model.card.key == "flight_id"


def test_card_records_the_gate_and_int8_is_default() -> None:
    card = load_card(VERSION_DIR)
    gate = card.quantization["gate"]
    assert gate["passed"] and card.signatures["default"] == "model.int8.onnx"
    assert card.quantization["method"] == "static QDQ int8"
    assert card.metrics["int8"]["auc"] > 0.65 and card.metrics["fp32"]["auc"] > 0.65
    assert set(card.reference_stats) == {*card.input_names, "score"}


def test_int8_scores_do_not_depend_on_batch_mates(july_rows: pa.Table) -> None:
    model = load_model(MODELS_DIR, "flights_delay", threads=1)
    assert july_rows.num_rows == 4_096
    batch = model.predict(july_rows, batch_rows=4_096)["score"]
    alone = model.predict(july_rows, batch_rows=1)["score"]
    assert batch.dtype == np.float32
    assert np.array_equal(batch, alone)


def test_july_drifts_from_the_reference_on_weather_not_on_airports(july_rows: pa.Table) -> None:
    card = load_card(VERSION_DIR)
    scored = july_rows.append_column(
        "score",
        pa.array(load_model(MODELS_DIR, "flights_delay").predict(july_rows, batch_rows=4_096)["score"]),
    )
    coerced = scored.set_column(
        scored.schema.get_field_index("temp"), "temp", scored["temp"].cast(pa.float32())
    )
    current = column_stats(coerced, ["origin", "temp", "score"], reference=card.reference_stats)
    psi = drift(card.reference_stats, current)
    assert psi["origin"] < 0.1
    assert psi["temp"] > 0.25  # January-June training vs a July week: real seasonal drift
