"""While versions are published and rolled back in a loop, every batch answer is one whole version."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import psycopg

from pipelines.store.publish import publish, rollback

READERS = 4
MIN_SEEN_PER_VERSION = 3
MAX_REQUESTS = 2000


def _flip_until(url: str, stop: threading.Event, flips: list[int]) -> None:
    """Publish toy/2 then roll it back, until told to stop (toy/1 is active again at the end)."""
    with psycopg.connect(url, autocommit=True) as conn:
        # A rolled-back run comes back only when published by its id.
        runs = [
            int(r[0])
            for r in conn.execute(
                "SELECT run_id FROM runs WHERE model = 'toy' AND version = '2' "
                "AND status IN ('verified', 'rolled_back')"
            )
        ]
        while not stop.is_set():
            publish(conn, model="toy", version="2", run_ids=runs)
            rollback(conn, model="toy")
            flips[0] += 1


def _violations(results: list[dict[str, Any]], scores: dict[str, dict[str, float]]) -> list[str]:
    versions = {r.get("version") for r in results}
    if len(versions) != 1 or any(r["status"] != "FOUND" for r in results):
        return [f"mixed or missing results: versions {versions}"]
    (version,) = versions
    return [r["key"] for r in results if r["score"] != scores[str(version)][r["key"]]]


async def _read_until_both_versions_seen(
    base: str, keys: list[str], scores: dict[str, dict[str, float]]
) -> tuple[dict[str, int], list[object]]:
    seen: dict[str, int] = {"1": 0, "2": 0}
    problems: list[object] = []
    requests = 0

    async def reader(client: httpx.AsyncClient) -> None:
        nonlocal requests
        while min(seen.values()) < MIN_SEEN_PER_VERSION and requests < MAX_REQUESTS and not problems:
            requests += 1
            response = await client.post("/v1/models/toy/predictions:batchGet", json={"keys": keys})
            if response.status_code != 200:
                problems.append(response.text)
                return
            results = response.json()["results"]
            problems.extend(_violations(results, scores))
            seen[str(results[0]["version"])] += 1

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(reader(client) for _ in range(READERS)))
    return seen, problems


def test_concurrent_batch_lookups_each_return_one_whole_version(api_url, api_cache) -> None:
    stop, flips = threading.Event(), [0]
    flipper = threading.Thread(target=_flip_until, args=(api_cache.url, stop, flips), daemon=True)
    flipper.start()
    try:
        seen, problems = asyncio.run(
            _read_until_both_versions_seen(api_url, api_cache.keys, api_cache.scores)
        )
    finally:
        stop.set()
        flipper.join(timeout=60)
    assert problems == []
    assert min(seen.values()) >= MIN_SEEN_PER_VERSION, f"versions seen {seen} over {flips[0]} flips"
