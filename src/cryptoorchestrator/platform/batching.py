"""Micro-batching for the bots of one process: calls made together run as one batch.

The bots of a group share one event loop and wake on the same candle, so within a few loop
iterations each of them asks for the same kind of thing: store an order intent, ask the risk
actor, mark an order submitted, snapshot equity.  Done one by one, ten bots cost ten
transactions and ten actor calls, each paying a round trip and its fixed overhead, and the risk
actor's queue made the last bot of a candle wait for every approval before its own.  A
:class:`Coalescer` gathers the calls of the same few iterations (Kafka's ``linger``, counted in
loop iterations rather than milliseconds, so a lone bot waits microseconds, not a timer) and runs
them as one batch: one transaction, one actor call.

Every caller still awaits its own result: a batch answers each item separately, an item may fail
alone (an exception object in its slot of the answer), and a batch that fails as a whole fails
each of its callers with that exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Loop iterations a batch stays open after its first item.  Bots woken by one shared answer
#: resume within one or two iterations (a thread-safe future adds a hop); three catches them
#: all without a timer, and costs a lone caller three empty iterations (microseconds).
LINGER_TICKS = 3


class Coalescer(Generic[T, R]):
    """Run the calls made on one event loop within ``linger_ticks`` iterations as one batch.

    Parameters
    ----------
    run_batch
        Takes the items in call order and returns one result per item, in the same order; a
        result that is an exception instance is raised to that item's caller only.
    linger_ticks
        Loop iterations a batch waits for more items after its first one.
    max_batch
        A batch this large runs at once instead of waiting (bounds statement and message size).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        linger_ticks: int = LINGER_TICKS,
        max_batch: int = 500,
    ) -> None:
        if linger_ticks < 0 or max_batch < 1:
            raise ValueError("linger_ticks must be >= 0 and max_batch >= 1")
        self._run = run_batch
        self._linger = linger_ticks
        self._max = max_batch
        # One open batch per event loop: futures belong to the loop that awaits them.
        self._open: dict[asyncio.AbstractEventLoop, _Batch[T, R]] = {}
        self.batches = 0  # how many batches ran (for tests and benchmarks)
        self.items = 0

    async def __call__(self, item: T) -> R:
        """Add ``item`` to the open batch (opening one if needed) and await its result."""
        loop = asyncio.get_running_loop()
        batch = self._open.get(loop)
        if batch is None:
            batch = _Batch()
            self._open[loop] = batch
            batch.tasks.append(loop.create_task(self._flush(loop, batch, self._linger)))
        future: asyncio.Future[R] = loop.create_future()
        batch.items.append(item)
        batch.futures.append(future)
        if len(batch.items) >= self._max:
            self._close(loop, batch)
            batch.tasks.append(loop.create_task(self._flush(loop, batch, 0)))
        return await future

    def _close(self, loop: asyncio.AbstractEventLoop, batch: _Batch[T, R]) -> None:
        if self._open.get(loop) is batch:
            del self._open[loop]

    async def _flush(
        self, loop: asyncio.AbstractEventLoop, batch: _Batch[T, R], ticks: int
    ) -> None:
        for _ in range(ticks):
            await asyncio.sleep(0)
        if batch.started:
            return  # a full batch already ran from its own task
        batch.started = True
        self._close(loop, batch)
        self.batches += 1
        self.items += len(batch.items)
        try:
            results = await self._run(list(batch.items))
            if len(results) != len(batch.items):
                raise RuntimeError(
                    f"batch returned {len(results)} results for {len(batch.items)} items"
                )
        except BaseException as exc:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in zip(batch.futures, results, strict=True):
            if future.done():  # its caller was cancelled (a stop): the batch still ran
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class _Batch(Generic[T, R]):
    __slots__ = ("futures", "items", "started", "tasks")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.futures: list[asyncio.Future[R]] = []
        self.started = False
        # Held here so the loop's weak references are not the only ones (asyncio's advice).
        self.tasks: list[asyncio.Task[None]] = []


__all__ = ["LINGER_TICKS", "Coalescer"]
