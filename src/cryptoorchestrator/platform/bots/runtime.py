"""The bot runtime: the trading loop of one bot, with the database as the source of truth.

``BotRuntime`` knows nothing of Ray; ``cluster.bot_actor.BotActor`` is a thin shell around it.

On each closed candle
---------------------
1. Evaluate the strategy on a rolling window of closed candles: the same ``signals`` code as a
   backtest, read at the last closed bar, so live and backtest decisions cannot diverge.  The
   window is the strategy's ``required_window(params)`` (``BotSettings.window``): fetched at
   start in pages of ``BotSettings.ohlcv_page`` candles, then rolled one candle at a time.
   It is long enough that the strategy's indicators at the last bar no longer depend on where
   the window starts (finite lookbacks covered, recursive seeds forgotten below 2**-80), so the
   decision on bar t is the backtest's on bar t computed on the whole history; a market with
   less history than that is evaluated on all of it, as a backtest over it would be.
2. Decide as the backtest engine does (an entry and an exit of one side on one bar cancel; an
   opposite entry reverses: close, then open).  Shorts are opened only by a strategy that
   shorts (``BotSettings.allow_short``) on an account that can (the client's
   ``supports_short``, a margin account: signed books, entries sized by the margin rule
   ``margin.entry_room`` as the kernel's); a spot account refuses such a strategy at
   :meth:`BotRuntime.prepare`, and there short entries only close a long.
3. Persist the order **intent** with a deterministic client order id
   ``co<bot>-<candle open ms>-<tag>`` before anything leaves the process.
4. Ask the risk gate; a denial (or a late or unreachable risk actor) marks the intent denied.
5. Mark the intent submitted, then submit through the execution client (a paper broker writes
   the mark in the transaction that books the order: one atomic step); persist the answer and
   every fill (fills are unique per order and exchange trade id, so a fill can be offered twice
   and is stored once), and update the position and cash in the same transaction.
6. Snapshot equity at the candle's close and report it (breaches halt the bot).

Stops
-----
An open position's stops follow the backtest kernel's rule, evaluated by the kernel's own code
(:mod:`cryptoorchestrator.platform.backtest.stops`): levels from the entry's fill price, the
tighter of stop-loss and trailing stop, the trailing extreme from closed bars only, a gap at the
open exits at the open, distances fixed at entry from the bot's settings, else the strategy's
per-bar ``Signals`` stops, else its class defaults.

The exchange holds the stop, so it holds while the bot is down: once an entry fills, the bot
places a stop-loss order (``OrderType.STOP_LOSS``, Binance spot's ``STOP_LOSS``) selling the
position at the kernel's level (the stop-loss, or the trailing stop where it is tighter) on
the exchange's tick, where the kernel places it too (``nb._stop_tick_nb``: a long's on the tick
at or below the level, a short's, a buy stop, at or above), tagged ``S`` or ``T`` by which of
the two it is.  When a closed candle moves the trailing level, the
order is replaced (cancelled, then placed anew under the candle's client order id: a restart
finds either the old order, the new one, or none and places it on the next candle); a signal
exit, a take-profit or the kill switch cancels it before selling (and sells nothing if it had
filled).  A placement the exchange refuses because the price is already through the level (a
candle that opened through it) exits at market at once (tags ``SM`` / ``TM``): the kernel exits
at that open.  A stop fill found on the candle close after the one it filled on (it filled at
the next open) leaves that close without a decision, as the kernel, still in the position at
that close, takes none.  Take-profits are not held by the exchange: the bot polls the candle
still forming (every ``poll_interval_s``) and closes at market once the candle reached the
level on the tick (the kernel's fill price; on a live market the fill is the price of that
moment).  When no stop order
is held (it was refused by the risk gate, or never placed), stop exits work the same way.

Crash safety
------------
Killing the process at any point is safe.  On (re)start the runtime reconciles every order that
is not final: it asks the exchange by client order id and adopts what happened (status, filled
amount, every fill it had missed).  An intent the exchange never saw is resubmitted (same id)
only when it belongs to the newest closed candle; an older one is cancelled as stale.  Candles
missed while down are not replayed: the bot resumes with the newest closed candle.

Every order status write follows the order state machine
(:mod:`cryptoorchestrator.platform.model.orders`) and is guarded by it in SQL: an answer that
arrives late cannot move a final order, and an order once submitted never becomes an intent
again (one being resent stays submitted).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Table, select, update

from cryptoorchestrator.platform.backtest.stops import (
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    REASON_TRAILING_STOP,
    PositionStops,
)

# BotSettings and LiveSignal are imported from here by the cluster's bot actors and signals.
from cryptoorchestrator.platform.bots.ledger import (
    BotSettings,
    Ledger,
    LiveSignal,
    candle_of,
    client_order_id,
    decide,
    entry_amount,
    risk_distance,
    stop_distances,
    stored_fill,
)
from cryptoorchestrator.platform.bots.process import BotProcess, Sending, SharedCandles
from cryptoorchestrator.platform.bots.records import store_answers
from cryptoorchestrator.platform.bots.writes import OrderWrites, Snapshot
from cryptoorchestrator.platform.errors import (
    CryptoOrchError,
    InvalidInputError,
    OrderStateUnknownError,
    RetryableExchangeError,
)
from cryptoorchestrator.platform.exchange.candle_feed import CandleFeed
from cryptoorchestrator.platform.exchange.execution import (
    REJECT_WOULD_TRIGGER,
    Candle,
    ExchangeOrder,
    ExecutionClient,
    Fill,
    OrderRejected,
    OrderRequest,
)
from cryptoorchestrator.platform.model import BotStatus, OrderSide, OrderStatus, OrderType
from cryptoorchestrator.platform.model import orders as lifecycle
from cryptoorchestrator.platform.model.clock import Clock, ms_to_datetime
from cryptoorchestrator.platform.model.enums import OPEN_ORDER_STATUSES
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms
from cryptoorchestrator.platform.notify.outbox import enqueue_order_updates
from cryptoorchestrator.platform.notify.system import notify_reconciliation
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import get_engine, session_scope
from cryptoorchestrator.platform.storage.models import EquitySnapshot, Order, Trade
from cryptoorchestrator.platform.telemetry import NullTelemetry, Telemetry

_ZERO = Decimal(0)
#: Longest wait between polls while a candle feed pushes closes: the net under a lost push.
FEED_SAFETY_POLL_S = 2.0
# The hot path writes through Core statements on the tables: the ORM's unit of work cost more
# CPU than the statements themselves, and 50 bots on two cores spent most of their time in it.
# Intents, submitted marks and snapshots, orders and answers are batched across the process's
# bots: the runtime's ``process`` (a :class:`~cryptoorchestrator.platform.bots.process.BotProcess`).
_ORDERS: Table = Order.__table__  # type: ignore[assignment]


class SignalSource(Protocol):
    """Evaluates a strategy over a window of bars (the cluster layer binds the registry)."""

    def __call__(self, bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool] | LiveSignal:
        """Return ``(long_entry, long_exit, short_entry, short_exit)`` at the last bar.

        A :class:`LiveSignal` (its stop distances after the four flags) is one too.
        """
        ...


#: Asks the risk gate about an order (``cluster.risk_actor.RiskClient.approve`` in bot actors).
RiskGate = Callable[[OrderCheck], Awaitable[RiskDecision]]
#: Receives events for ``/ws/bots`` and the risk actor: ``(kind, payload)``.
EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class RuntimeState:
    """What control calls report while the loop runs (read without locks: plain values)."""

    status: BotStatus = BotStatus.STARTING
    reason: str | None = None
    last_candle_ms: int | None = None
    last_decision_ms: float | None = None
    orders_sent: int = 0
    errors: int = 0
    #: Recent latencies (ms): candle handled end to end, and the risk gate's round trip.
    decision_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    risk_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    #: When (wall clock, s) the bot saw each recent candle close, by the candle's open time:
    #: benchmarks compare it with the moment the exchange got the order.
    seen_at: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=1000))
    #: Per recent candle acted on, wall-clock seconds after seeing it at which each step of
    #: the decision ended (strategy, ticker, intent, risk, submitted mark, exchange answer,
    #: candle done): where the decision latency goes.
    steps: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=1000))


def _would_trigger(rejected: OrderRejected) -> bool:
    """Whether a stop order was refused because the price is already through its stop."""
    return rejected.code == REJECT_WOULD_TRIGGER or "trigger immediately" in rejected.reason


class BotRuntime:
    """One bot's trading loop (see the module docstring).

    ``process`` is the bot process this bot runs in: its batchers (intents, submitted marks,
    snapshots, orders sent, answers recorded) are shared with the other bots of the process.
    None: a process of the bot's own (:meth:`BotProcess.for_settings`), closed with the bot.
    ``clock`` defaults to the process's.  ``candles``: the shared candle requests (usually the
    process's ``candles``); None: this bot asks alone.
    """

    def __init__(
        self,
        config: BotSettings,
        settings: Settings,
        client: ExecutionClient,
        signals: SignalSource,
        risk: RiskGate,
        *,
        process: BotProcess | None = None,
        clock: Clock | None = None,
        events: EventSink | None = None,
        on_equity: Callable[[Decimal], Awaitable[None]] | None = None,
        poll_interval_s: float = 1.0,
        settle_s: float = 11.0,
        logger: logging.Logger | None = None,
        candles: SharedCandles | None = None,
        feed: CandleFeed | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.client = client
        self.signals = signals
        self.risk = risk
        self._own_process = process is None
        self.process = process if process is not None else BotProcess.for_settings(settings)
        self.clock: Clock = clock if clock is not None else self.process.clock
        self.events = events
        self.on_equity = on_equity
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s
        self.candles = candles
        self.feed = feed
        self.writes: OrderWrites = self.process.writes
        self.log = logger or logging.getLogger(f"cryptoorchestrator.bot.{config.bot_id}")
        # Monitoring sink: the cluster hands in Ray's metrics; backtests and tests record nothing.
        self.telemetry: Telemetry = telemetry or NullTelemetry()
        self.state = RuntimeState()
        # Whether the account can short (a capability of the client, e.g. a margin account);
        # a client that does not declare it (a duck-typed test double) is a spot account.
        self._margin = bool(getattr(client, "supports_short", False))
        # Whether the exchange writes the submitted mark as it books the order (a paper
        # exchange in our database); a duck-typed test double does not.
        self._books_mark = bool(getattr(client, "books_submitted_mark", False))
        self.ledger = Ledger(cash=config.starting_balance, margin=self._margin)
        self._tf_ms = timeframe_to_ms(config.timeframe)
        base, _, quote = config.symbol.partition("/")
        self.base_asset, self.quote_asset = base, quote.split(":")[0]
        self._stop = asyncio.Event()
        self._unconfirmed = False
        self._steps: dict[str, float] = {}
        self._window: list[Candle] = []
        # The candle still forming at the last fetch (stops are watched on it).
        self._forming: Candle | None = None
        # The open position's stops (the kernel's state), and the distances the last signal
        # gave for an entry on its bar.
        self._stops: PositionStops | None = None
        # The exchange's price tick: stop levels go on it as the kernel's do (set by prepare).
        self._price_tick = 0.0
        self._entry_stops = stop_distances(config)
        # The forming candle a stop exit was last tried on (one decision per candle).
        self._stop_tried_ms: int | None = None
        # The stop-loss order the exchange holds for the position: (client order id, stop).
        self._held_stop: tuple[str, Decimal] | None = None
        # Orders that became final since the last drain: the risk gate releases their
        # open-order slots when the bot reports at the end of a candle.
        self._closed: list[str] = []
        # Submitted orders reconciliation found the exchange never received, whose decision is
        # still current: the next decision on their candle sends them again (same id).
        self._resend: set[str] = set()
        # Orders found "submitted" at start but not (yet) at the exchange, within its receive
        # window: client order id -> when marked.  See _settled.
        self._unsettled: dict[str, datetime] = {}

    # ------------------------------------------------------------------------- lifecycle

    def request_stop(self) -> None:
        """Ask the loop to finish after the current step."""
        self._stop.set()

    def note_closed(self, client_order_id: str) -> None:
        """Note an order that became final (its risk slot is released at the candle's end)."""
        self._closed.append(client_order_id)

    def drain_closed_orders(self) -> list[str]:
        """Return (and forget) the client order ids that became final since the last call."""
        closed, self._closed = self._closed, []
        return closed

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    async def prepare(self) -> None:
        """Load the books from the database and reconcile with the exchange (before trading)."""
        # Compile (or load from numba's cache) the kernel's stop rule now, not on the first
        # candle that reaches a stop.
        PositionStops(1.0, 0, sl=0.5, tick=0.01).check(1, 1.0, 1.0, 1.0)
        if self.config.allow_short and not self._margin:
            raise InvalidInputError(
                "short",
                f"the strategy shorts, but the bot's {self.config.exchange} account is a spot "
                "account that cannot sell what it does not hold",
                allowed="short=false, or an account that supports shorts (margin)",
            )
        market = await self.client.market(self.config.symbol)
        self._price_tick = float(market.price_tick or 0)
        # Database work runs on a worker thread: the bots of the process share this loop.
        await asyncio.to_thread(self._load_ledger)
        await self.reconcile(report=True)
        self._held_stop = await asyncio.to_thread(self._stored_stop)

    async def run(self) -> None:
        """Trade until :meth:`request_stop`: process each newly closed candle once."""
        if self.feed is not None:
            self.feed.watch(self.config.symbol, self.config.timeframe)
        while not self._stop.is_set():
            try:
                await self.poll_once()
            except RetryableExchangeError as exc:
                self.state.errors += 1
                self.log.warning("exchange unavailable, retrying: %s", exc)
            await self._until_next_poll(self.next_poll_delay_s())

    async def close(self) -> None:
        """Release the exchange client, the candle feed, and a process of the bot's own."""
        try:
            await self.client.close()
        finally:
            feed, self.feed = self.feed, None
            if feed is not None:
                await feed.close()
            if self._own_process:
                await self.process.close()

    async def _until_next_poll(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less: until the candle feed pushes the next close.

        With a connected feed the exchange says within milliseconds that a candle closed, and
        polling is only a safety net (at most every :data:`FEED_SAFETY_POLL_S`) for a push
        lost while the stream reconnected; a feed still connecting wakes the bot too, but the
        bot polls every ``delay`` meanwhile.  Without a feed, with an order to reconcile, or
        when the feed knows of a close that REST did not show yet: plain polling.
        """
        feed, cfg, after = self.feed, self.config, self.state.last_candle_ms
        known = None if feed is None else feed.last_closed(cfg.symbol, cfg.timeframe)
        watching = self._watching_stops()
        if feed is None or after is None or self._unconfirmed or watching or (known or 0) > after:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            return
        if feed.connected(cfg.symbol, cfg.timeframe):
            delay = max(delay, FEED_SAFETY_POLL_S)
        pushed = asyncio.ensure_future(feed.wait_closed(cfg.symbol, cfg.timeframe, after, delay))
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((pushed, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pushed.cancel()
            stopped.cancel()

    def next_poll_delay_s(self) -> float:
        """Seconds until the next poll: the next instant of the poll grid, or the candle's close.

        Bots wake on a grid of poll instants common to every bot of the process (wall clock),
        so bots sharing candle requests ask together, and a closed candle is seen at most one
        interval after it closed.  Nothing can close before the candle after the last one seen
        does, so until then the bot sleeps: polling an hour-long candle every second spent
        3,599 requests of the exchange's rate budget to learn nothing.  (A clock far from the
        exchange's, such as a replay's, only ever finds that close in the past: plain polling.)
        """
        period = self.poll_interval_s
        now_ms = self.clock.now_ms()
        delay = period - (now_ms / 1000.0) % period if period > 0 else 0.0
        last = self.state.last_candle_ms
        # While a stop is armed the forming candle is watched: no sleeping until its close.
        if last is not None and not self._unconfirmed and not self._watching_stops():
            until_close = (last + 2 * self._tf_ms - now_ms) / 1000.0
            delay = max(delay, until_close)
        return max(delay, 0.001)

    # -------------------------------------------------------------------------- the loop

    async def poll_once(self) -> bool:
        """Process the newest closed candle if it is new; return whether one was processed."""
        if self._unconfirmed:
            self._unconfirmed = False
            await self.reconcile()
        candles = await self._closed_candles()
        if (
            not candles
            or candles[-1].timestamp_ms == self.state.last_candle_ms
            # the exchange answered from a stale replica: never go back in time
            or (
                self.state.last_candle_ms is not None
                and candles[-1].timestamp_ms < self.state.last_candle_ms
            )
        ):
            await self._watch_forming()
            return False
        await self.on_candle(candles)
        # The new candle's open may already be through a stop (a gap): as the kernel, exit now.
        await self._watch_forming()
        return True

    def _watching_stops(self) -> bool:
        """Whether an open position has a stop to watch on the forming candle."""
        stops = self.position_stops()
        return stops is not None and stops.armed

    async def _watch_forming(self) -> None:
        """Exit at market when the forming candle has already reached a stop (the kernel's rule).

        A level the forming candle's low (high) reached is one the closed candle reaches, so
        this is the kernel's exit bar; the fill is the market's price of this moment.
        """
        forming = self._forming
        if forming is None or not self._watching_stops() or self.stopping:
            return
        last = self.state.last_candle_ms
        if (
            last is None
            or forming.timestamp_ms <= last
            or forming.timestamp_ms == (self._stop_tried_ms)
        ):
            return
        self._steps = {}
        action, tag, reason = self._stop_exit(forming)
        if action == "held":
            # The exchange holds this stop: learn whether it filled.
            await self._sync_stop()
        elif action is not None:
            self._stop_tried_ms = forming.timestamp_ms
            await self._act(forming, action, tag, reason)

    async def _closed_candles(self) -> list[Candle]:
        """Return the window of closed candles, oldest first (empty if the exchange has none).

        The full window is asked for once (in pages, see :meth:`_fetch_history`); later polls
        ask for the last closed candle and the forming one only (kept for the stops), and extend
        the window kept here while candles follow each other; a gap asks for the whole window
        again.  A first answer shorter than the window is the market's whole history: it grows
        until it is full, then rolls.
        """
        window = self._window
        if window:
            recent = await self._fetch_candles(2)
            closed = recent[:-1]
            if closed:
                step = closed[-1].timestamp_ms - window[-1].timestamp_ms
                if step <= 0:
                    # nothing new (or a stale replica: never go back)
                    self._forming = recent[-1] if step == 0 else self._forming
                    return window
                if step == self._tf_ms:
                    # A window shorter than asked is the market's whole history (the first
                    # fetch found no more): it grows from there, as a backtest over it would.
                    keep = window[1:] if len(window) >= self.config.window else window
                    self._window = [*keep, closed[-1]]
                    self._forming = recent[-1]
                    return self._window
        candles = await self._fetch_history(self.config.window + 1)
        # The exchange's last candle is the one still forming: decisions use closed bars only.
        self._window = candles[:-1]
        self._forming = candles[-1] if candles else None
        return self._window

    async def _fetch_history(self, count: int) -> list[Candle]:
        """Return the last ``count`` candles (the forming one included), oldest first.

        One request when ``count`` fits a page; otherwise the newest page, then older pages
        forward from where the window starts (``since``), as many as the exchange has.
        """
        page = max(int(self.config.ohlcv_page), 2)
        newest = await self._fetch_candles(min(count, page))
        if count <= page or not newest:
            return newest
        cfg, tf = self.config, self._tf_ms
        first = newest[0].timestamp_ms
        since = newest[-1].timestamp_ms - (count - 1) * tf
        older: list[Candle] = []
        while since < first:
            limit = int(max(1, min(page, (first - since) // tf)))
            batch = await self.client.fetch_ohlcv(
                cfg.symbol, cfg.timeframe, since_ms=since, limit=limit
            )
            batch = [c for c in batch if since <= c.timestamp_ms < first]
            if not batch:
                break  # nothing older (the market's first candle) or a hole up to ``first``
            older.extend(batch)
            since = batch[-1].timestamp_ms + tf
        return [*older, *newest][-count:]

    async def _fetch_candles(self, limit: int) -> list[Candle]:
        cfg = self.config

        def fetch() -> Awaitable[list[Candle]]:
            return self.client.fetch_ohlcv(cfg.symbol, cfg.timeframe, limit=limit)

        source = self.client.market_data_key
        if self.candles is not None and source is not None:
            # Half an interval: bots waking on the same poll instant share, the next poll asks
            # again.
            key = (source, cfg.symbol, cfg.timeframe, limit)
            return await self.candles.get(key, self.poll_interval_s / 2, fetch)
        return await fetch()

    async def on_candle(self, candles: list[Candle]) -> None:
        """Decide and act on the newest closed candle of ``candles`` (oldest first)."""
        started = self.clock.monotonic()
        last = candles[-1]
        seen = self.clock.now_ms() / 1000.0
        self.state.seen_at.append((last.timestamp_ms, seen))
        bars = {
            "timestamp": np.array([c.timestamp_ms for c in candles], dtype=np.int64),
            "open": np.array([c.open for c in candles], dtype=np.float64),
            "high": np.array([c.high for c in candles], dtype=np.float64),
            "low": np.array([c.low for c in candles], dtype=np.float64),
            "close": np.array([c.close for c in candles], dtype=np.float64),
            "volume": np.array([c.volume for c in candles], dtype=np.float64),
        }
        self._steps = {}
        # A stop the exchange filled on the next candle's open: the position was still held at
        # this close, where the kernel decides nothing (an entry is ignored, an exit too late).
        late = any(
            f.timestamp_ms >= last.timestamp_ms + self._tf_ms for f in await self._sync_stop()
        )
        # The kernel's order on a bar: stops first (from the extreme of the bars before it),
        # then the bar's high joins the trailing extreme, then the signal on its close.
        action, tag, reason = self._stop_exit(last)
        if action == "held":
            action = None  # the exchange's to fill (it fills what its price reached)
        if action is None and self._stops is not None:
            self._stops.close_bar(last.timestamp_ms, last.high, last.low)
        if action is None:
            sig = tuple(self.signals(bars))
            le, lx, se, sx = (bool(v) for v in sig[:4])
            stops = (*sig[4:7], math.nan, math.nan, math.nan)[:3]
            self._entry_stops = stop_distances(self.config, stops)
            shorts = self.config.allow_short and self._margin
            position = await self._tradable_position()
            action = None if late else decide(position, le, lx, se, sx, shorts=shorts)
            tag, reason = "", "signal"
        self._step("strategy")
        if action is not None:
            for step in action.split("+"):
                # tags: L opens a long, H a short, X closes (one client order id each)
                step_tag = tag or {"buy": "L", "short": "H"}.get(step, "X")
                await self._act(last, step, step_tag, reason)
        await self._hold_stop(last)
        mark = Decimal(repr(last.close))
        await self._snapshot(last, mark)
        self.state.last_candle_ms = last.timestamp_ms
        self.state.last_decision_ms = (self.clock.monotonic() - started) * 1000
        if action is not None:
            self.state.decision_ms.append(self.state.last_decision_ms)
            self._step("done")
            self.state.steps.append({k: v - started for k, v in self._steps.items()})
        self._measure(last, mark, seen)
        if self.on_equity is not None:
            await self.on_equity(self.ledger.equity(mark))

    def _measure(self, last: Candle, mark: Decimal, seen: float) -> None:
        """Report the candle's decision latency, the bot's equity and exposure, and its lag."""
        bot, telemetry = self.config.bot_id, self.telemetry
        assert self.state.last_decision_ms is not None
        telemetry.decision_latency(bot, self.state.last_decision_ms / 1000)
        telemetry.equity(
            bot, float(self.ledger.equity(mark)), float(abs(self.ledger.amount * mark))
        )
        # How long after its close the bot saw the candle (a slow feed or a stuck poll).
        telemetry.candle_lag(bot, seen - (last.timestamp_ms + self._tf_ms) / 1000)

    def _step(self, name: str) -> None:
        self._steps[name] = self.clock.monotonic()

    async def _tradable_position(self) -> Decimal:
        """The position as far as decisions go: dust below the exchange's lot step is flat."""
        amount = self.ledger.amount
        if amount == 0:
            return _ZERO
        market = await self.client.market(self.config.symbol)
        rounded = market.round_amount(abs(amount))
        if rounded <= 0 or (market.min_amount is not None and rounded < market.min_amount):
            return _ZERO
        return amount

    def _stop_exit(self, candle: Candle) -> tuple[str | None, str, str]:
        """Exit a position whose stops ``candle`` reached, by the backtest kernel's rule.

        ``candle`` is the newest closed candle, or the one forming (its prices so far).  The
        action is ``"held"`` for a stop the exchange holds an order for, else ``"sell"`` (a
        long) or ``"cover"`` (a short).
        """
        stops = self.position_stops()
        if stops is None:
            return None, "", ""
        reason, _ = stops.check(candle.timestamp_ms, candle.open, candle.high, candle.low)
        if reason in (REASON_STOP_LOSS, REASON_TRAILING_STOP) and self._held_stop is not None:
            return "held", "", ""
        close = "sell" if stops.side > 0 else "cover"
        if reason == REASON_STOP_LOSS:
            return close, "S", "stop_loss"
        if reason == REASON_TRAILING_STOP:
            return close, "T", "trailing_stop"
        if reason == REASON_TAKE_PROFIT:
            return close, "P", "take_profit"
        return None, "", ""

    def position_stops(self) -> PositionStops | None:
        """Return the open position's stop state (built from the books on its first use).

        A position opened by this process gets the distances of its signal bar; one found in
        the books at start (a restart) gets the bot's settings, else the last signal's, and
        its trailing extreme from the kept candles since its entry bar.
        """
        book = self.ledger
        if book.amount == 0 or not book.entry_open or book.entry_amount <= 0:
            self._stops = None
            return None
        side = 1.0 if book.amount > 0 else -1.0
        entry = float(book.entry_price)
        entry_ms = book.entry_ms if book.entry_ms is not None else self.clock.now_ms()
        forming = self._forming
        if forming is not None and 0 <= entry_ms - forming.timestamp_ms < self._tf_ms:
            entry_bar = forming.timestamp_ms  # the candle the entry filled in
        else:  # rebuilt after a restart: candles open on multiples of their length (UTC)
            entry_bar = entry_ms - entry_ms % self._tf_ms
        known = self._stops
        if known is not None and (
            known.entry_price,
            known.entry_bar_ms,
            known.tick,
            known.side,
        ) == (entry, entry_bar, self._price_tick, side):
            return known
        sl, tp, tsl = self._entry_stops
        stops = PositionStops(entry, entry_bar, sl, tp, tsl, tick=self._price_tick, side=side)
        last = self.state.last_candle_ms
        for c in self._window:
            if last is not None and c.timestamp_ms <= last:
                stops.close_bar(c.timestamp_ms, c.high, c.low)
        self._stops = stops
        return stops

    async def _act(self, candle: Candle, action: str, tag: str, reason: str) -> None:
        """Send one order: ``action`` is ``"buy"``/``"short"`` (open) or ``"sell"``/``"cover"``
        (close the long/short), under the client order id of ``candle`` and ``tag``."""
        cfg = self.config
        closing = action in ("sell", "cover")
        if closing and not await self._cancel_stop():
            return  # the exchange's stop closed the position first
        if closing and (self.ledger.amount > 0) != (action == "sell"):
            return  # nothing of that side left to close
        if (
            not closing
            and self.ledger.amount != 0
            and (self.ledger.amount > 0) != (action == "buy")
        ):
            return  # the reversal's close did not happen (denied, rejected): open nothing
        cid = client_order_id(cfg.bot_id, candle.timestamp_ms, tag)
        ticker = await self.client.fetch_ticker(cfg.symbol)
        self._step("ticker")
        side = OrderSide.BUY if action in ("buy", "cover") else OrderSide.SELL
        price = ticker.price_for(side) or Decimal(repr(candle.close))
        if closing:
            amount = abs(self.ledger.amount)
        else:
            amount = self._entry_amount(price, 1 if action == "buy" else -1)
        if amount <= 0:
            return
        market = await self.client.market(cfg.symbol)
        amount = market.round_amount(amount)
        if amount <= 0:
            self.log.info("order below the lot step skipped", extra={"client_order_id": cid})
            return
        existing = await self._settled(cid, await self._intent(cid, side, amount, price))
        self._step("intent")
        if not self._may_send(cid, existing):
            return  # this decision was already carried out (before a restart)
        stop_price = None
        if not closing and cfg.stop_loss_pct is not None:
            # the stop the entry was sized on (the nearest of stop-loss and trailing stop)
            away = self._risk_distance()
            stop_price = price * (1 - away) if action == "buy" else price * (1 + away)
        asked = self.clock.monotonic()
        decision = await self.risk(
            OrderCheck(
                bot_id=cfg.bot_id,
                client_order_id=cid,
                symbol=cfg.symbol,
                side=side,
                amount=amount,
                price=price,
                reduce_only=closing,
                stop_price=stop_price,
                # limits apply to equity now (at this price), not at the last candle's close
                equity=self.ledger.equity(price),
                position_notional=self.ledger.amount * price,
                fee_rate=cfg.fee_rate,
            )
        )
        self.state.risk_ms.append((self.clock.monotonic() - asked) * 1000)
        self._step("risk")
        if not decision.approved:
            await self._deny(cid, f"{decision.limit}: {decision.reason}")
            await self._emit(
                (
                    "order_denied",
                    {"clientOrderId": cid, "reason": decision.reason, "limit": decision.limit},
                )
            )
            return
        await self._submit(OrderRequest(cfg.symbol, side, OrderType.MARKET, amount, cid), reason)

    # ---------------------------------------------------------------- the held stop order

    async def _hold_stop(self, candle: Candle) -> None:
        """Hold the position's stop on the exchange at the kernel's level (module docstring).

        Called once ``candle`` (closed) was decided: places the stop after an entry, replaces
        it when the level moved, and exits at market when the exchange refuses it because the
        price is already through the level.
        """
        cfg = self.config
        stops = self.position_stops()
        want: tuple[Decimal, str] | None = None
        market = await self.client.market(cfg.symbol)
        if stops is not None:
            reason, level = stops.stop_level()
            # a long's stop is below its level's tick, a short's above (the kernel's rounding)
            rounding = ROUND_FLOOR if stops.side > 0 else ROUND_CEILING
            if reason >= 0 and math.isfinite(level) and level > 0:
                # The kernel's level is on the tick (the float of the decimal ``k x tick``):
                # its shortest repr is that decimal, and the floor below keeps it.  Without a
                # known tick (prepare not run) the level is floored here.
                price = Decimal(repr(level))
                if market.price_tick:
                    units = (price / market.price_tick).to_integral_value(rounding=rounding)
                    price = (units * market.price_tick).quantize(market.price_tick)
                want = (price, "T" if reason == REASON_TRAILING_STOP else "S")
        held = self._held_stop
        if held is not None and want is not None and held[1] == want[0]:
            return
        if held is not None and not await self._cancel_stop():
            return  # it filled: nothing left to protect
        amount = market.round_amount(abs(self.ledger.amount))
        if want is None or want[0] <= 0 or amount <= 0 or self.stopping or stops is None:
            return
        price, tag = want
        # the stop closes the position: a long's sells, a short's buys back
        close_side = OrderSide.SELL if stops.side > 0 else OrderSide.BUY
        cid = client_order_id(cfg.bot_id, candle.timestamp_ms, tag)
        existing = await self._settled(
            cid, await self._intent(cid, close_side, amount, price, OrderType.STOP_LOSS)
        )
        if not self._may_send(cid, existing):
            self._held_stop = await asyncio.to_thread(self._stored_stop)
            return  # placed before a restart (reconciled at start)
        decision = await self.risk(
            OrderCheck(
                bot_id=cfg.bot_id,
                client_order_id=cid,
                symbol=cfg.symbol,
                side=close_side,
                amount=amount,
                price=price,
                reduce_only=True,
                equity=self.ledger.equity(price),
                position_notional=self.ledger.amount * price,
            )
        )
        if not decision.approved:
            # Unprotected on the exchange: the bot watches the level itself (``_stop_exit``).
            await self._deny(cid, f"{decision.limit}: {decision.reason}")
            return
        reason_text = "trailing_stop" if tag == "T" else "stop_loss"
        request = OrderRequest(
            cfg.symbol, close_side, OrderType.STOP_LOSS, amount, cid, stop_price=price
        )
        result = await self._submit(request, reason_text)
        if isinstance(result, ExchangeOrder):
            if result.is_final:
                self.note_closed(cid)
            else:
                self._held_stop = (cid, price)
        elif isinstance(result, OrderRejected) and _would_trigger(result):
            # The price is through the level already (the candle opened there): the kernel
            # exits at that open, so sell at market now.
            forming = self._forming or candle
            close = "sell" if close_side is OrderSide.SELL else "cover"
            await self._act(forming, close, tag + "M", reason_text)

    async def _sync_stop(self) -> list[Fill]:
        """Adopt the held stop order's state; return its new fills (empty: none held)."""
        held = self._held_stop
        if held is None:
            return []
        order = await self.client.fetch_order(self.config.symbol, client_order_id=held[0])
        if order is None:
            self._held_stop = None
            return []
        fills = await self._adopt(order)
        if order.is_final:
            self._held_stop = None
            self.note_closed(held[0])
        return fills

    async def _cancel_stop(self) -> bool:
        """Cancel the held stop order; return whether the position is still held (not sold)."""
        held, self._held_stop = self._held_stop, None
        if held is None:
            return True
        order = await self.client.cancel_order(self.config.symbol, client_order_id=held[0])
        if order is None:
            return self.ledger.amount != 0
        await self._adopt(order)
        if order.is_final:
            self.note_closed(held[0])
        return order.filled <= 0

    def _stored_stop(self) -> tuple[str, Decimal] | None:
        """The bot's stop order the exchange holds by the books (after reconciliation)."""
        with session_scope(self.settings) as session:
            row = session.scalars(
                select(Order)
                .where(
                    Order.bot_id == self.config.bot_id,
                    Order.type == OrderType.STOP_LOSS.value,
                    Order.status.in_((OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value)),
                )
                .order_by(Order.id.desc())
                .limit(1)
            ).first()
            if row is None or row.price is None:
                return None
            return row.client_order_id, row.price

    def _entry_amount(self, price: Decimal, side: int = 1) -> Decimal:
        """Size an entry (``side`` 1: long, -1: short) at ``price`` as the backtest engine
        sizes it, on the distances of the last signal (:func:`~cryptoorchestrator.platform.
        bots.ledger.entry_amount`)."""
        return entry_amount(self.config, self.ledger, price, side, self._entry_stops)

    def _risk_distance(self) -> Decimal:
        """The distance risk sizing divides by (:func:`~cryptoorchestrator.platform.bots.
        ledger.risk_distance`) for an entry now."""
        return risk_distance(self._entry_stops, self.config.stop_loss_pct)

    async def _submit(
        self, request: OrderRequest, reason: str
    ) -> ExchangeOrder | OrderRejected | None:
        """Send an intent already stored; return the exchange's answer (None: none known)."""
        self._resend.discard(request.client_order_id)
        if self._books_mark:
            # The paper exchange lives in our database: the mark is written in the transaction
            # that books the order, one step (and one transaction of the group) fewer.
            sending: Sending = (self.client, request, reason)
        else:
            # Marked before the request leaves, so a restart asks the exchange about it.
            await self.writes.submitted((request.client_order_id, reason))
            self._step("marked")
            sending = (self.client, request, None)
        try:
            result = await self.process.submissions(sending)
            self._step("sent")
        except OrderStateUnknownError as exc:
            # The answer was lost and the exchange cannot be asked now: keep the order
            # "submitted" and let reconciliation find out what happened on the next poll.
            self._unconfirmed = True
            self.log.warning("order state unknown, will reconcile: %s", exc)
            return None
        except RetryableExchangeError as exc:
            # Certainly not sent (circuit open, rate limited before sending): the decision lapses.
            await self._marked(lifecycle.OrderCanceled(request.client_order_id, f"not sent: {exc}"))
            return None
        self.state.orders_sent += 1
        self.telemetry.order(self.config.bot_id, "submitted")
        if isinstance(result, OrderRejected):
            await self._marked(lifecycle.OrderRejected(request.client_order_id, result.reason))
            await self._emit(
                (
                    "order_rejected",
                    {"clientOrderId": request.client_order_id, "reason": result.reason},
                )
            )
            return result
        await self._adopt(result)
        return result

    # ------------------------------------------------------------------- reconciliation

    async def reconcile(self, *, report: bool = False) -> int:
        """Adopt what the exchange did with every order not yet final; return how many.

        ``report`` (on start): what differed from the exchange (a status, missed fills, an
        order it never got) is told to the bot's owner as ``reconciliation.discrepancy``.
        """
        rows = await asyncio.to_thread(self._unfinished_orders)
        newest = None
        if rows:
            candles = await self._closed_candles()
            newest = candles[-1].timestamp_ms if candles else None
        now = ms_to_datetime(self.clock.now_ms())
        found: list[dict[str, Any]] = []
        for cid, status, submitted_at in rows:
            order = await self.client.fetch_order(self.config.symbol, client_order_id=cid)
            if order is not None:
                missed = await self._adopt(order)
                if missed or order.status.value != status:
                    found.append(
                        {
                            "clientOrderId": cid,
                            "kind": "status" if order.status.value != status else "fills",
                            "stored": status,
                            "exchange": order.status.value,
                            "missedFills": len(missed),
                        }
                    )
            elif (
                status == OrderStatus.SUBMITTED.value
                and submitted_at is not None
                and (now - submitted_at).total_seconds() < self.settle_s
            ):
                # A request in flight may still arrive (the exchange accepts it within its
                # receive window): ask again on the next poll before concluding anything.
                self._unconfirmed = True
                self._unsettled[cid] = submitted_at
            elif newest is not None and candle_of(cid) in (newest, newest + self._tf_ms):
                # The exchange never got it and never will; the decision is still current (the
                # newest closed candle's, or a stop's on the forming one), so the next decision
                # on that candle sends it, under the same client order id.  A submitted order
                # stays submitted (the order state machine has no way back to an intent): it
                # is noted here for that decision to send again.
                if status == OrderStatus.SUBMITTED.value:
                    self._resend.add(cid)
            else:
                why = "never reached the exchange; stale after restart"
                await self._marked(lifecycle.OrderCanceled(cid, why))
                found.append(
                    {
                        "clientOrderId": cid,
                        "kind": "unknown",
                        "stored": status,
                        "exchange": None,
                        "missedFills": 0,
                    }
                )
        if report and found:
            await asyncio.to_thread(notify_reconciliation, self.settings, self.config.bot_id, found)
        return len(rows)

    def _unfinished_orders(self) -> list[tuple[str, str, datetime | None]]:
        """The bot's orders not yet final: client order id, status, when submitted."""
        with session_scope(self.settings) as session:
            pending = session.scalars(
                select(Order).where(
                    Order.bot_id == self.config.bot_id, Order.status.in_(OPEN_ORDER_STATUSES)
                )
            ).all()
            return [(o.client_order_id, o.status, o.submitted_at) for o in pending]

    async def _adopt(self, order: ExchangeOrder) -> list[Fill]:
        """Persist the exchange's view of an order and every fill of it we had missed.

        Returns the fills that were new.
        """
        fills = list(order.fills)
        if order.filled > sum((f.amount for f in fills), _ZERO):
            fills = await self.client.fetch_my_trades(self.config.symbol, order_id=order.order_id)
        new_fills = await self.process.recordings((self, order, fills))
        events: list[tuple[str, dict[str, Any]]] = [
            (
                "fill",
                {
                    "clientOrderId": order.client_order_id,
                    "price": str(fill.price),
                    "amount": str(fill.amount),
                    "side": fill.side.value,
                },
            )
            for fill in new_fills
        ]
        if order.is_final:
            events.append(
                (
                    "order",
                    {
                        "clientOrderId": order.client_order_id,
                        "status": order.status.value,
                        "filled": str(order.filled),
                    },
                )
            )
        await self._emit(*events)
        return new_fills

    def record_answer(self, order: ExchangeOrder, fills: list[Fill]) -> list[Fill]:
        """Store the order's state and its new fills, and move the books, in one transaction.

        Returns the fills that were new (:func:`~cryptoorchestrator.platform.bots.records.
        store_answers` of this answer alone).
        """
        return store_answers([(self, order, fills)])[0]

    # ------------------------------------------------------------------------ persistence

    async def _intent(
        self,
        cid: str,
        side: OrderSide,
        amount: Decimal,
        price: Decimal,
        otype: OrderType = OrderType.MARKET,
    ) -> str | None:
        """Persist a new intent; return the status of an existing order with this id, if any.

        ``"exists"`` means another incarnation of this bot stored the id at the same moment.
        """
        return await self.writes.intent(
            {
                "bot_id": self.config.bot_id,
                "client_order_id": cid,
                "exchange": self.config.exchange,
                "symbol": self.config.symbol,
                "side": side.value,
                "type": otype.value,
                "price": price,
                "amount": amount,
                "filled": _ZERO,
                "status": OrderStatus.INTENT.value,
            }
        )

    def _mark(self, event: lifecycle.OrderEvent) -> bool:
        """Record ``event`` on the bot's order, guarded by the order state machine.

        Returns whether it was written: an order that moved on meanwhile (an answer recorded
        first, another incarnation of the bot) keeps its status.  An order that is not stored
        at all is a bug (``LookupError``).
        """
        cid, status = event.client_order_id, event.status
        values: dict[str, Any] = {"status": status.value, "status_reason": event.reason}
        if status.is_final:
            values["closed_at"] = ms_to_datetime(self.clock.now_ms())
        column = _ORDERS.c.client_order_id
        with get_engine(self.settings).begin() as conn:
            result = conn.execute(
                update(_ORDERS)
                .where(column == cid, _ORDERS.c.status.in_(lifecycle.applies_in(event)))
                .values(**values)
            )
            if result.rowcount != 1:
                stored = conn.execute(select(_ORDERS.c.status).where(column == cid)).scalar()
                if stored is None:
                    raise LookupError(f"order {cid} is not stored")
                self.log.warning(
                    "order status left as it is",
                    extra={"client_order_id": cid, "stored": stored, "event": type(event).__name__},
                )
                return False
            if status in (OrderStatus.REJECTED, OrderStatus.CANCELED):
                # the owner hears of it through the outbox, in this transaction
                pk = conn.execute(select(_ORDERS.c.id).where(column == cid)).scalar_one()
                enqueue_order_updates(conn, {pk: {"status": status.value}})
        if status.is_final:
            self.note_closed(cid)
        return True

    async def _marked(self, event: lifecycle.OrderEvent) -> bool:
        """:meth:`_mark` on a worker thread: the bots of the process share this loop."""
        return await asyncio.to_thread(self._mark, event)

    async def _deny(self, cid: str, reason: str) -> None:
        """Record the risk gate's denial of an order about to be sent.

        An order being resent after a restart (:meth:`reconcile`) was submitted once and cannot
        become an intent denied before sending: its resend lapses (canceled) instead.
        """
        if cid in self._resend:
            self._resend.discard(cid)
            await self._marked(lifecycle.OrderCanceled(cid, f"resend denied: {reason}"))
        else:
            await self._marked(lifecycle.OrderDenied(cid, reason))

    async def _settled(self, cid: str, existing: str | None) -> str | None:
        """Settle an order of this decision left "submitted" by a crash before its answer.

        The decision is being made again on its candle after a restart, within the exchange's
        receive window of the mark, so reconciliation could not tell yet whether the request
        left.  Skipping the order would lose it: once the window passed, nothing decides on
        that candle again.  So the window is waited out here (this bot only; the others of the
        process go on) and the exchange asked: it has the order (adopted, nothing to send) or
        never will (sent now, under the same client order id).  Returns the status to decide
        on.
        """
        marked = self._unsettled.pop(cid, None)
        if existing != OrderStatus.SUBMITTED.value or marked is None or cid in self._resend:
            return existing
        wait_s = self.settle_s - (ms_to_datetime(self.clock.now_ms()) - marked).total_seconds()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        order = await self.client.fetch_order(self.config.symbol, client_order_id=cid)
        if order is None:
            self._resend.add(cid)
            return existing
        await self._adopt(order)
        if order.is_final:
            self.note_closed(cid)
        return order.status.value

    def _may_send(self, cid: str, existing: str | None) -> bool:
        """Whether an order whose intent was just stored (``existing``: the status found
        instead, None: new) is to be sent: a new intent, one left from before a restart, or
        one :meth:`reconcile` found the exchange never received."""
        if existing is None or existing == OrderStatus.INTENT.value:
            return True
        return existing == OrderStatus.SUBMITTED.value and cid in self._resend

    async def _snapshot(self, candle: Candle, mark: Decimal) -> None:
        value = self.ledger.amount * mark
        await self.writes.snapshot(
            Snapshot(
                bot_id=self.config.bot_id,
                timestamp=ms_to_datetime(candle.timestamp_ms + self._tf_ms),
                equity=self.ledger.cash + value,
                cash=self.ledger.cash,
                position_value=value,
            )
        )

    def _load_ledger(self) -> None:
        """Rebuild the books exactly from the stored fills (the database is the truth)."""
        book = Ledger(cash=self.config.starting_balance, margin=self._margin)
        with session_scope(self.settings) as session:
            trades = session.scalars(
                select(Trade).where(Trade.bot_id == self.config.bot_id).order_by(Trade.id)
            ).all()
            for t in trades:
                book.apply(
                    stored_fill(t),
                    self.base_asset,
                    self.quote_asset,
                )
            last = session.scalars(
                select(EquitySnapshot)
                .where(EquitySnapshot.bot_id == self.config.bot_id)
                .order_by(EquitySnapshot.timestamp.desc())
                .limit(1)
            ).first()
            if last is not None:
                self.state.last_candle_ms = int(last.timestamp.timestamp() * 1000) - self._tf_ms
        self.ledger = book

    async def _emit(self, *events: tuple[str, dict[str, Any]]) -> None:
        """Log and publish events; several at once join one batch of the event sink.

        One after another, an order's fill and its final state went out as two batches of a
        group's events, each a call to the event bus.
        """
        for kind, payload in events:
            self.log.info(kind, extra={"event": kind, **payload})
            self._count(kind, payload)
        if self.events is None or not events:
            return
        bot = self.config.bot_id
        answers = await asyncio.gather(
            *(self.events(kind, {"botId": bot, **payload}) for kind, payload in events),
            return_exceptions=True,
        )
        for (kind, _), answer in zip(events, answers, strict=True):
            if isinstance(answer, CryptoOrchError):
                self.log.warning("event sink refused %s", kind)
            elif isinstance(answer, BaseException):
                raise answer

    def _count(self, kind: str, payload: dict[str, Any]) -> None:
        """Count an order event in the telemetry (every order outcome passes through here)."""
        bot = self.config.bot_id
        if kind == "fill":
            self.telemetry.fill(bot, str(payload.get("side", "")))
        elif kind == "order":
            self.telemetry.order(bot, str(payload.get("status", "")))
        elif kind == "order_denied":
            self.telemetry.order(bot, OrderStatus.DENIED.value)
        elif kind == "order_rejected":
            self.telemetry.order(bot, OrderStatus.REJECTED.value)

    # -------------------------------------------------------------------------- control

    async def cancel_open_orders(self) -> int:
        """Cancel every open order of the bot on the exchange (its stop too); return how many."""
        self._held_stop = None
        cancelled = 0
        for order in await self.client.fetch_open_orders(self.config.symbol):
            cid = order.client_order_id or ""
            if not cid.startswith(f"co{self.config.bot_id}-"):
                continue  # another bot's order on a shared account
            result = await self.client.cancel_order(self.config.symbol, client_order_id=cid)
            if result is not None:
                await self._adopt(result)
                cancelled += 1
        return cancelled

    async def flatten(self) -> bool:
        """Sell the whole position at market (kill switch); return whether an order was sent."""
        if self.ledger.amount == 0 or not await self._cancel_stop():
            return False
        market = await self.client.market(self.config.symbol)
        amount = market.round_amount(abs(self.ledger.amount))
        if amount <= 0:
            return False
        side = OrderSide.SELL if self.ledger.amount > 0 else OrderSide.BUY
        cid = client_order_id(self.config.bot_id, self.clock.now_ms(), "K")
        ticker = await self.client.fetch_ticker(self.config.symbol)
        price = ticker.price_for(side) or self.ledger.average_price
        if await self._intent(cid, side, amount, price) is not None:
            return False
        await self._submit(
            OrderRequest(self.config.symbol, side, OrderType.MARKET, amount, cid),
            "kill switch: flatten",
        )
        return True
