"""Any key column value either stores and reads back exactly, or is a stored reject: never a failed write."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.core.keyrule import key_reason
from pipelines.core.model import load_model
from pipelines.core.score import score_table
from pipelines.core.shards import Shard
from pipelines.store import ledger
from pipelines.store.db import connection
from pipelines.store.writer import write_shard

RAW = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.from_regex(r"\A[A-Za-z0-9_.:@/+=-]{1,30}\Z").map(str.encode),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(RAW, min_size=1, max_size=40, unique=True))
def test_generated_keys_store_exactly_or_become_rejects(
    migrated_url: str, toy_models_dir: Path, values: list[bytes | None]
) -> None:
    model = load_model(toy_models_dir, "toy")
    binary = pa.array(values, pa.binary())
    keys = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers(), binary.null_count)
    table = pa.table({"id": keys, "x": [0.25] * len(values), "n": [1] * len(values)})
    whole = Shard(lo=-(1 << 63), hi=1 << 63, depth=0, index=0, rows=len(values))
    with connection(migrated_url, autocommit=True) as conn:
        with conn.transaction():
            version_id = ledger.register_version(conn, model)
            run_id = ledger.create_run(
                conn, version_id=version_id, model=model, engine="test", input_uri="/in/keys",
                fingerprint="f", shard_rows=1000, shards=[whole],
            )  # fmt: skip
        result = score_table(whole.shard_id, table, model, batch_rows=16)
        assert write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        stored = [
            r[0]
            for r in conn.execute(
                f"SELECT key FROM {ledger.partition_name(version_id)} WHERE run_id = %s", (run_id,)
            )
        ]
        reasons = [r[0] for r in conn.execute("SELECT reason FROM rejects WHERE run_id = %s", (run_id,))]
    valid = [v.decode() for v in values if v is not None and key_reason(v) is None]
    assert sorted(stored) == sorted(valid)
    assert len(reasons) == len(values) - len(valid) and all(reasons)
