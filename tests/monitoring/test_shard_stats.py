"""A run's statistics are added up from its shards' parts instead of reading the input again.

They must equal what reading the input and the stored predictions again gives (the path runs
without shard statistics still take), wherever merged statistics are exact (``tests.stats_compare``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.core.model import load_model
from pipelines.core.stats import drift, typed_outputs
from pipelines.jobs import RunRequest, run_job
from pipelines.observe import INPUT_BATCH_ROWS, _scored_inputs, _stored_outputs, streamed_stats
from pipelines.settings import DEFAULT_MODELS_DIR
from pipelines.store.db import connection
from tests.stats_compare import close, exact_parts


def test_shard_statistics_add_up_to_reading_the_input_and_predictions_again(
    migrated_url: str, settings_for: Any, flights_dir: Path
) -> None:
    settings = settings_for(migrated_url)
    day = flights_dir / "date=2013-07-02"
    summary = run_job(settings, RunRequest(model="flights_delay", input=day, shard_rows=300, rerun=True))
    card = load_model(DEFAULT_MODELS_DIR, "flights_delay").card
    with connection(migrated_url, autocommit=True) as conn:
        shards = conn.execute(
            "SELECT count(*), count(stats) FROM run_shards WHERE run_id = %s", (summary.run_id,)
        ).fetchone()
        stored = conn.execute(
            "SELECT input_stats, output_stats, drift FROM run_stats WHERE run_id = %s", (summary.run_id,)
        ).fetchone()
        again_outputs = streamed_stats(
            _stored_outputs(conn, summary.run_id, card), typed_outputs(card), card.reference_stats
        )
    assert (
        shards is not None and shards[0] > 1 and shards[0] == shards[1]
    )  # several shards, each with its part
    assert stored is not None
    again_inputs = streamed_stats(
        _scored_inputs(day, card, batch_rows=INPUT_BATCH_ROWS), card.scalar_columns, card.reference_stats
    )
    reference = card.reference_stats
    assert close(exact_parts(stored[0], reference), exact_parts(again_inputs, reference))
    assert close(exact_parts(stored[1], reference), exact_parts(again_outputs, reference))
    assert close(stored[2], drift(reference, {**again_inputs, **again_outputs}))
