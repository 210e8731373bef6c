"""Dynamic micro-batching: concurrent requests for one model version share one scoring call.

Why: a scoring call has a fixed cost that does not grow with its rows (Arrow and onnxruntime
calls per column: ~2 ms of CPU for one flights_delay row, ~2.9 ms for 16), and calls run on
the API's few scoring threads. Scored one by one, 16 concurrent 1-row requests queue behind
each other and the queue, not the model, sets the p99.

How: a request joins the queue of its group (model, version). Whenever a scoring thread is
free, the group whose oldest request waited longest hands everything it holds (up to
``max_rows`` rows) to that thread as one batch, and each request gets its own answer back.
Nothing waits for a timer: on an idle server a request is scored at once; on a busy one a
batch is whatever arrived while the previous call ran.

The score function answers each request separately (its results, or its own error), so one
bad request never fails its neighbours. A request whose client went away (its task was
cancelled) leaves the queue, or its answer is dropped when its batch is already running.
All state lives on the event loop's thread: no locks.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pipelines.api.errors import ScorerClosedError

G = TypeVar("G", bound=Hashable)  # what requests must share to be scored together
P = TypeVar("P")  # one request's payload
R = TypeVar("R")  # one request's answer

#: score(group, payloads) -> one answer or exception per payload, in order (runs on a thread).
ScoreBatch = Callable[[G, list[P]], list[R | Exception]]
#: observe(group, requests, size) after each batch is handed to a thread (for metrics).
ObserveBatch = Callable[[G, int, int], None]

_arrivals = itertools.count()


@dataclass(eq=False)
class _Waiting(Generic[P, R]):
    payload: P
    size: int
    future: asyncio.Future[R]
    arrival: int = field(default_factory=lambda: next(_arrivals))


class MicroBatcher(Generic[G, P, R]):
    """Coalesces concurrent requests of a group into batches scored on a small thread pool.

    Args:
        score: scores one group's batch (blocking; see ``ScoreBatch``).
        size: a payload's size in rows (batches stop growing at ``max_rows``).
        workers: scoring threads: at most this many batches run at once (the CPU budget).
        max_rows: rows per batch; a larger single request still runs, alone.
        observe: called once per batch handed to a thread.
    """

    def __init__(
        self,
        score: ScoreBatch[G, P, R],
        *,
        size: Callable[[P], int],
        workers: int,
        max_rows: int,
        observe: ObserveBatch[G] | None = None,
    ) -> None:
        self._score = score
        self._size = size
        self._max_rows = max_rows
        self._observe = observe
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predcache-online")
        self._free = workers
        self._queues: dict[G, deque[_Waiting[P, R]]] = {}
        self._closed = False

    async def submit(self, group: G, payload: P) -> R:
        """The answer to ``payload``, scored in a batch with whatever else of ``group`` waits.

        Raises:
            ScorerClosedError: the batcher was closed (the server is shutting down).
            Exception: the one ``score`` returned or raised for this payload.
        """
        if self._closed:
            raise ScorerClosedError()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(group, deque()).append(_Waiting(payload, self._size(payload), future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Hand batches to free threads, oldest waiting group first."""
        while self._free and self._queues and not self._closed:
            group = min(self._queues, key=lambda g: self._queues[g][0].arrival)
            batch = self._take(self._queues[group])
            if not self._queues[group]:
                del self._queues[group]
            if not batch:  # every waiting request of the group was cancelled
                continue
            self._free -= 1
            if self._observe is not None:
                self._observe(group, len(batch), sum(w.size for w in batch))
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self._executor, self._score, group, [w.payload for w in batch])
            running.add_done_callback(functools.partial(self._finish, batch))

    def _take(self, queue: deque[_Waiting[P, R]]) -> list[_Waiting[P, R]]:
        """The oldest live requests of ``queue`` up to ``max_rows`` rows (at least one); the rest stay."""
        batch: list[_Waiting[P, R]] = []
        rows = 0
        while queue:
            waiting = queue[0]
            if waiting.future.done():  # its client went away
                queue.popleft()
                continue
            if batch and rows + waiting.size > self._max_rows:
                break
            batch.append(queue.popleft())
            rows += waiting.size
        return batch

    def _finish(self, batch: list[_Waiting[P, R]], running: asyncio.Future[list[R | Exception]]) -> None:
        self._free += 1
        if running.cancelled():  # the batcher was closed before the batch started
            for waiting in batch:
                waiting.future.cancel()
            return
        error = running.exception()
        answers: list[R | BaseException] = [error] * len(batch) if error is not None else [*running.result()]
        for waiting, answer in zip(batch, answers, strict=True):
            if waiting.future.done():  # its client went away while the batch ran
                continue
            if isinstance(answer, BaseException):
                waiting.future.set_exception(answer)
            else:
                waiting.future.set_result(answer)
        self._dispatch()

    def waiting(self) -> int:
        """Requests queued for a thread (those whose client left included, until a batch skips them)."""
        return sum(len(queue) for queue in self._queues.values())

    def close(self) -> None:
        """Stop the threads; batches not yet started are cancelled, waiting requests too."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        for queue in self._queues.values():
            for waiting in queue:
                waiting.future.cancel()
        self._queues.clear()
