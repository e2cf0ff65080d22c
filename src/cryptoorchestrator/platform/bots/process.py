"""The bot process: what the bots sharing one process and one event loop share.

A bot actor (one bot, or a group of bots on one loop), a replay, a benchmark or a test creates
one :class:`BotProcess` and hands it to everything that batches across bots: each
:class:`~cryptoorchestrator.platform.bots.runtime.BotRuntime` (its intents, submitted marks and
snapshots in :attr:`BotProcess.writes`, its orders in :attr:`BotProcess.submissions`, the
exchange's answers in :attr:`BotProcess.recordings`) and each paper broker
(:attr:`BotProcess.bookings`).  Nothing is process-global: two processes in one interpreter
(two tests, a replay next to a group) batch apart.

The batches are what makes a group cheap: the bots of a group that act on one candle share one
transaction per step instead of one each (see :mod:`cryptoorchestrator.platform.batching`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cryptoorchestrator.platform.batching import Coalescer
from cryptoorchestrator.platform.bots.records import Recording, record_answers
from cryptoorchestrator.platform.bots.writes import OrderWrites
from cryptoorchestrator.platform.errors import RetryableExchangeError
from cryptoorchestrator.platform.exchange.execution import (
    ExchangeOrder,
    ExecutionClient,
    Fill,
    OrderRejected,
    OrderRequest,
)
from cryptoorchestrator.platform.exchange.paper import PaperBookings
from cryptoorchestrator.platform.model.clock import Clock, LiveClock
from cryptoorchestrator.platform.settings import Settings

_T = TypeVar("_T")


class SharedCandles:
    """Market-data requests shared by the bots of one process (candles, tickers).

    Bots that poll the same market within ``max_age_s`` of each other get one answer from one
    request: the first asks the exchange, the others wait for its answer.  Bots wake on a common
    grid of poll instants (``BotRuntime.run``), so a group of N bots makes one request per poll
    instead of N; without sharing, a group polling often kept both cores busy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], tuple[float, concurrent.futures.Future[Any]]] = {}

    async def get(
        self,
        key: tuple[Any, ...],
        max_age_s: float,
        fetch: Callable[[], Awaitable[_T]],
    ) -> _T:
        """Return the answer to ``fetch`` asked under ``key`` at most ``max_age_s`` ago."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < max_age_s:
                future, mine = entry[1], False
            else:
                future, mine = concurrent.futures.Future(), True
                self._entries[key] = (now, future)
        if not mine:
            # Shielded: a waiter being stopped must not cancel the answer the others wait for.
            result: _T = await asyncio.shield(asyncio.wrap_future(future))
            return result
        try:
            candles = await fetch()
        except BaseException as exc:
            # The waiters retry on their next poll, as after any exchange failure; our own
            # cancellation (a stop) is not theirs.
            shared = exc if isinstance(exc, Exception) else RetryableExchangeError(repr(exc))
            future.set_exception(shared)
            with self._lock:  # a failure is not an answer to keep
                if self._entries.get(key, (0.0, None))[1] is future:
                    del self._entries[key]
            raise
        future.set_result(candles)
        return candles

    def clear(self) -> None:
        """Forget every answer kept (a later request asks again)."""
        with self._lock:
            self._entries.clear()


#: An order to send: the client, the request, and for a client that books the submitted mark
#: itself (``books_submitted_mark``) the reason its intent is marked with in the booking's own
#: transaction (None: already marked).
Sending = tuple[ExecutionClient, OrderRequest, str | None]


def _send(item: Sending) -> Awaitable[ExchangeOrder | OrderRejected]:
    client, request, mark = item
    if mark is None:
        return client.create_order(request)
    return client.create_marked_order(request, mark)


async def send_orders(items: list[Sending]) -> list[ExchangeOrder | OrderRejected | BaseException]:
    """Send orders concurrently; answer each only once all of them are out.

    The bots of a process that act on one candle send together, and none of them books its
    fills (a transaction each) while another's order is still on its way: candle close to
    order at the exchange is the latency that counts, the bookkeeping can wait milliseconds.
    """
    return list(await asyncio.gather(*map(_send, items), return_exceptions=True))


class BotProcess:
    """The settings, clock, batchers and shared requests of the bots of one process.

    Parameters
    ----------
    settings
        The platform's settings (the database every batch writes to).
    clock
        Where the bots read the time (default: the wall clock).

    Create one per bot process and pass it in; :meth:`close` it when the process's bots are
    done.  :meth:`for_settings` makes one for a single bot built without a process.
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock if clock is not None else LiveClock()
        #: Intents, submitted marks and equity snapshots (one transaction per step).
        self.writes = OrderWrites(settings, clock=self.clock)
        #: Orders sent together (see :func:`send_orders`).
        self.submissions: Coalescer[Sending, ExchangeOrder | OrderRejected] = Coalescer(send_orders)
        #: Exchange answers recorded together (see :func:`~cryptoorchestrator.platform.bots.
        #: records.record_answers`).
        self.recordings: Coalescer[Recording, list[Fill]] = Coalescer(record_answers)
        #: The paper brokers' bookings (pass to ``PaperBroker(bookings=...)``).
        self.bookings = PaperBookings(settings)
        #: Candle and ticker requests shared by bots polling the same market together.
        self.candles = SharedCandles()
        self._closed = False

    @classmethod
    def for_settings(cls, settings: Settings, *, clock: Clock | None = None) -> BotProcess:
        """Return a new process of its own for one bot built without one (nothing shared)."""
        return cls(settings, clock=clock)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def close(self) -> None:
        """Forget the shared requests; the bots of this process must be closed already.

        The batchers hold no connection of their own (statements borrow the database pool's):
        a batch still running finishes, and calling close twice is harmless.
        """
        self._closed = True
        self.candles.clear()


__all__ = ["BotProcess", "Sending", "SharedCandles", "send_orders"]
