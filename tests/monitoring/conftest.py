"""Monitoring fixtures: a cache holding one published toy run, its input and its stored scores."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.stats import column_stats
from pipelines.settings import Settings

ROWS = 400
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium (Debian package `chromium`) on a local page."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "headless Chromium is missing: apt-get install -y chromium"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


@dataclass(frozen=True)
class ToyCache:
    settings: Settings
    url: str
    run_id: int
    scores: dict[str, float]
    folder: Path


def write_toy_input(folder: Path, name: str, *, rows: int = ROWS, seed: int = 3, shift: float = 0.0) -> Path:
    """A toy model input (id, x, n) as one Parquet file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    table = pa.table(
        {
            "id": [f"{name}-{i}" for i in range(rows)],
            "x": (rng.normal(size=rows) + shift).astype(np.float32),
            "n": rng.integers(0, 5, size=rows),
        }
    )
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def toy_cache(migrated_url: str, tmp_path_factory: pytest.TempPathFactory, toy_model_builder) -> ToyCache:  # type: ignore[no-untyped-def]
    """One published beam run of the toy model over 400 keys."""
    import psycopg

    from pipelines.jobs import RunRequest, run_job

    folder = tmp_path_factory.mktemp("toy_monitoring")
    models = folder / "models"
    card_path = toy_model_builder(models) / "card.json"
    settings = Settings(database_url=migrated_url, home=folder / "home", models_dir=models, workers=1)
    source = write_toy_input(folder / "input", "day1")
    add_reference_stats(card_path, write_toy_input(folder / "reference", "ref", rows=2_000, seed=1))
    summary = run_job(settings, RunRequest(model="toy", input=source, publish=True))
    with psycopg.connect(migrated_url) as conn:
        scores: dict[str, float] = dict(
            conn.execute("SELECT key, score FROM predictions WHERE run_id = %s", (summary.run_id,)).fetchall()
        )
    return ToyCache(settings, migrated_url, summary.run_id, scores, folder)


def add_reference_stats(card_path: Path, reference: Path) -> None:
    """Give the toy card reference statistics of its inputs and score (as a real build does)."""
    table = pq.read_table(reference)
    x, n = table["x"].to_numpy(), table["n"].to_numpy()
    score = 1 / (1 + np.exp(-(0.5 * x + 0.25 * n)))
    card = json.loads(card_path.read_text())
    stats = column_stats(table.append_column("score", pa.array(score, pa.float32())), ["x", "n", "score"])
    card_path.write_text(json.dumps({**card, "reference_stats": stats}, indent=2))


def write_labels(
    path: Path, labels: Mapping[str, float | None], *, key: str = "id", label: str = "y"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({key: list(labels), label: pa.array(list(labels.values()), pa.float64())}), path)
    return path


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP receiver (127.0.0.1, port 0) that records the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()
    server.server_close()
