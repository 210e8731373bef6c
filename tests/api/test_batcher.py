"""MicroBatcher: concurrent requests share scoring calls, each gets its own answer or error.

The score function here is a fake that records its calls and can hold the one scoring thread
(a gate), so what waits behind a running call is known exactly: no timing is involved.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipelines.api.batcher import MicroBatcher
from pipelines.api.errors import ScorerClosedError, UnprocessableRowsError
from pipelines.api.metrics import Metrics

GATE_TIMEOUT_S = 30.0


class GatedScore:
    """Answers each payload (a list of words) with the words upper-cased; ``bad`` is refused.

    Every call waits for ``gate`` (set: calls run straight through).
    """

    def __init__(self) -> None:
        self.calls: list[list[list[str]]] = []
        self.gate = threading.Event()

    def __call__(self, group: str, payloads: list[list[str]]) -> list[list[str] | Exception]:
        self.calls.append(payloads)
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        return [
            UnprocessableRowsError(f"{group}: bad request") if "bad" in p else [w.upper() for w in p]
            for p in payloads
        ]


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (a scoring thread has reached its gate)."""
    for _ in range(int(GATE_TIMEOUT_S * 1000)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def run(scenario: Callable[[MicroBatcher[str, list[str], list[str]], GatedScore], Awaitable[Any]]) -> Any:
    score = GatedScore()
    batcher: MicroBatcher[str, list[str], list[str]] = MicroBatcher(score, size=len, workers=1, max_rows=4)

    async def main() -> Any:
        try:
            return await scenario(batcher, score)
        finally:
            score.gate.set()
            batcher.close()

    return asyncio.run(main())


def test_requests_that_arrive_while_a_call_runs_share_the_next_call() -> None:
    async def scenario(batcher: MicroBatcher[str, list[str], list[str]], score: GatedScore) -> None:
        first = asyncio.ensure_future(batcher.submit("m", ["a"]))
        await until(lambda: len(score.calls) == 1)  # scored at once: no timer on an idle batcher
        rest = [asyncio.ensure_future(batcher.submit("m", [w])) for w in ("b", "c", "d")]
        await until(lambda: batcher.waiting() == 3)
        score.gate.set()
        assert await asyncio.gather(first, *rest) == [["A"], ["B"], ["C"], ["D"]]
        assert score.calls == [[["a"]], [["b"], ["c"], ["d"]]]

    run(scenario)


def test_a_batch_stops_at_max_rows_and_the_rest_goes_next() -> None:
    async def scenario(batcher: MicroBatcher[str, list[str], list[str]], score: GatedScore) -> None:
        first = asyncio.ensure_future(batcher.submit("m", ["a"]))
        await until(lambda: len(score.calls) == 1)
        rest = [asyncio.ensure_future(batcher.submit("m", p)) for p in (["b", "c"], ["d", "e"], ["f"])]
        await until(lambda: batcher.waiting() == 3)
        score.gate.set()
        await asyncio.gather(first, *rest)
        assert score.calls == [[["a"]], [["b", "c"], ["d", "e"]], [["f"]]]

    run(scenario)


def test_groups_are_never_mixed_in_one_call() -> None:
    async def scenario(batcher: MicroBatcher[str, list[str], list[str]], score: GatedScore) -> None:
        first = asyncio.ensure_future(batcher.submit("m", ["a"]))
        await until(lambda: len(score.calls) == 1)
        rest = [
            asyncio.ensure_future(batcher.submit(g, [w])) for g, w in (("v2", "b"), ("m", "c"), ("v2", "d"))
        ]
        await until(lambda: batcher.waiting() == 3)
        score.gate.set()
        assert await asyncio.gather(first, *rest) == [["A"], ["B"], ["C"], ["D"]]
        assert score.calls == [[["a"]], [["b"], ["d"]], [["c"]]]  # the oldest waiting group first

    run(scenario)


def test_a_refused_request_gets_its_error_and_its_neighbours_their_answers() -> None:
    async def scenario(batcher: MicroBatcher[str, list[str], list[str]], score: GatedScore) -> None:
        score.gate.set()
        first = asyncio.ensure_future(batcher.submit("m", ["a"]))
        bad = asyncio.ensure_future(batcher.submit("m", ["bad"]))
        last = asyncio.ensure_future(batcher.submit("m", ["c"]))
        assert await first == ["A"] and await last == ["C"]
        with pytest.raises(UnprocessableRowsError, match="bad request"):
            await bad

    run(scenario)


def test_a_call_that_raises_fails_only_the_requests_it_held() -> None:
    def broken(group: str, payloads: list[list[str]]) -> list[list[str] | Exception]:
        if payloads == [["boom"]]:
            raise RuntimeError("model file vanished")
        return [[w.upper() for w in p] for p in payloads]

    async def main() -> None:
        batcher: MicroBatcher[str, list[str], list[str]] = MicroBatcher(
            broken, size=len, workers=1, max_rows=1
        )
        try:
            with pytest.raises(RuntimeError, match="vanished"):
                await batcher.submit("m", ["boom"])
            assert await batcher.submit("m", ["ok"]) == ["OK"]
        finally:
            batcher.close()

    asyncio.run(main())


def test_clients_that_go_away_do_not_stop_the_batcher() -> None:
    async def scenario(batcher: MicroBatcher[str, list[str], list[str]], score: GatedScore) -> None:
        running = asyncio.ensure_future(batcher.submit("m", ["a"]))
        await until(lambda: len(score.calls) == 1)
        waiting = asyncio.ensure_future(batcher.submit("m", ["b"]))
        kept = asyncio.ensure_future(batcher.submit("m", ["c"]))
        await until(lambda: batcher.waiting() == 2)
        running.cancel()  # its call is under way: the answer is dropped
        waiting.cancel()  # still queued: it leaves the queue
        timed_out = asyncio.wait_for(batcher.submit("m", ["d"]), timeout=0.001)
        with pytest.raises(TimeoutError):
            await timed_out
        score.gate.set()
        assert await kept == ["C"]
        assert await batcher.submit("m", ["e"]) == ["E"]
        assert ["b"] not in [p for call in score.calls for p in call]
        assert running.cancelled() and waiting.cancelled()

    run(scenario)


def test_a_closed_batcher_refuses_requests_and_cancels_those_waiting() -> None:
    async def scenario(batcher: MicroBatcher[str, list[str], list[str]], score: GatedScore) -> None:
        asyncio.ensure_future(batcher.submit("m", ["a"]))
        await until(lambda: len(score.calls) == 1)
        waiting = asyncio.ensure_future(batcher.submit("m", ["b"]))
        await until(lambda: batcher.waiting() == 1)
        batcher.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(ScorerClosedError):
            await batcher.submit("m", ["c"])

    run(scenario)


def test_each_call_is_counted_with_its_requests_and_rows_on_metrics() -> None:
    metrics = Metrics(lambda: None, lambda: 0)
    score = GatedScore()

    async def main() -> None:
        batcher: MicroBatcher[str, list[str], list[str]] = MicroBatcher(
            score, size=len, workers=1, max_rows=10, observe=metrics.count_batch
        )
        try:
            first = asyncio.ensure_future(batcher.submit("toy", ["a"]))
            await until(lambda: len(score.calls) == 1)
            rest = [asyncio.ensure_future(batcher.submit("toy", p)) for p in (["b", "c"], ["d"], ["e"])]
            await until(lambda: batcher.waiting() == 3)
            score.gate.set()
            await asyncio.gather(first, *rest)
        finally:
            score.gate.set()
            batcher.close()

    asyncio.run(main())
    text = metrics.render().decode()
    assert 'predcache_api_online_batches_total{model="toy"} 2.0' in text
    assert 'predcache_api_online_batched_requests_total{model="toy"} 4.0' in text
    assert 'predcache_api_online_batched_rows_total{model="toy"} 5.0' in text
