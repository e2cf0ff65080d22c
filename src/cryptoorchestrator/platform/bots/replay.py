"""Replays: the real bot runtime trading stored candles on the exchange simulator, candle by candle.

A replay runs :class:`~cryptoorchestrator.platform.bots.runtime.BotRuntime` (the code of every
live bot), a :class:`~cryptoorchestrator.platform.risk.manager.RiskManager`, a
:class:`~cryptoorchestrator.platform.exchange.paper.PaperBroker` and ccxt's ``binance`` client
against :class:`~cryptoorchestrator.platform.exchange.sim.ExchangeSimulator` serving the
given candles.  The simulator's clock is stepped to the open of each candle in turn and the bot
handles the candle that just closed before the clock moves again: the handshake is the runtime's
own ``poll_once`` (it returns once the candle is decided, its orders answered and its equity
snapshot written), checked against the runtime's last processed candle.  The bot's stop-loss
and trailing stop rest on the paper exchange as stop-loss orders, which fill by the kernel's rule
on the candles (at the level on the exchange's tick, or at the open of a candle that gaps through
it), so no clock stop is needed for them.  Take-profits are the bot's own market exits: while the
bot holds a position whose take-profit the forming candle reaches (the kernel's rule on the whole
candle, where the stop wins when both are reached), the clock also stops at the first instant
the candle's price path reaches the level on the exchange's tick, where the bot, watching the
forming candle, sells at market.

The paper broker is set for backtest parity: fees in quote (``price x qty x fee``) and the
forming candle's last price as the only quote (bid = ask; at the instant a candle opens, its
open), so an order decided on candle t fills at candle t+1's open, as ``co.backtest`` fills it.
A bot whose strategy shorts (``BotSettings.allow_short``) trades a paper margin account under
the backtest's margin rule (``max_gross_leverage``); any other bot a spot account.
The bot's recorded fills then become a :class:`ReplayResult`, a
:class:`~cryptoorchestrator.platform.backtest.result.BacktestResult` built exactly as the engine
builds its own (orders, round trips, equity at each close, metrics).

This module knows nothing of Ray or the strategy registry: the caller hands it a signal source
(``cluster.replay`` binds the registry and offers a Ray mode).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import select

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.backtest.result import BacktestResult
from cryptoorchestrator.platform.backtest.stops import round_to_tick_nb
from cryptoorchestrator.platform.bots.ledger import BotSettings
from cryptoorchestrator.platform.bots.process import BotProcess
from cryptoorchestrator.platform.bots.runtime import BotRuntime, SignalSource
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim import SymbolSpec, default_spec, first_touch
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms
from cryptoorchestrator.platform.model.timestamps import annualisation
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import (
    Bot,
    EquitySnapshot,
    ExchangeAccount,
    Order,
    Trade,
    User,
)

#: The user owning replayed bots in a database given to a replay.
_REPLAY_USER = "replay@cryptoorchestrator.local"
#: Finest price tick the simulator quotes (Binance's 8 decimals).
_MAX_DECIMALS = 8
#: Exit reason of an order by the tag of its client order id (see ``BotRuntime._act``).
_REASON_BY_TAG = {
    "S": nb.REASON_STOP_LOSS,
    "SM": nb.REASON_STOP_LOSS,
    "P": nb.REASON_TAKE_PROFIT,
    "T": nb.REASON_TRAILING_STOP,
    "TM": nb.REASON_TRAILING_STOP,
}


# A database migrated once per process, copied for each temporary replay: migrating took longer
# than replaying a few hundred candles.
_template_lock = threading.Lock()
_template: list[tuple[tempfile.TemporaryDirectory[str], Path]] = []


def temporary_settings(folder: Path) -> Settings:
    """Return settings for a migrated SQLite database (and var/log folders) inside ``folder``."""
    with _template_lock:
        if not _template:
            holder = tempfile.TemporaryDirectory(prefix="cryptoorch-replay-template-")
            source = _settings_in(Path(holder.name))
            db.upgrade(source)
            db.dispose_engine(source)
            _template.append((holder, Path(holder.name) / "replay.db"))
        shutil.copyfile(_template[0][1], folder / "replay.db")
    return _settings_in(folder)


def _settings_in(folder: Path) -> Settings:
    # Nothing of a temporary replay may land in the working directory.
    return Settings(
        database_url=f"sqlite:///{folder / 'replay.db'}",
        var_dir=folder / "var",
        log_dir=folder / "logs",
        secret_key="replay-" + "0" * 32,
    )


@dataclass(frozen=True)
class ReplaySpec:
    """What one replay trades: the bot's settings and the exchange's filters.

    Attributes
    ----------
    symbol, timeframe
        The market and candle interval (the candles' spacing).
    bot
        The bot's settings (sizing, stops, fee rate, window); ``bot_id`` is set once the bot row
        exists.
    exchange
        The simulator's filters for ``symbol`` (tick, lot step, minimums).
    limits
        The risk manager's limits.
    """

    symbol: str
    timeframe: str
    bot: BotSettings
    exchange: SymbolSpec
    limits: RiskLimits


@dataclass(eq=False)
class ReplayResult(BacktestResult):
    """A :class:`BacktestResult` built from a replayed bot's recorded fills.

    Attributes
    ----------
    bot_equity
        The bot's own equity snapshot at each candle's close (after the orders decided on that
        candle filled at the next open; NaN for the last candle, which the bot never decides on).
    mode
        ``"in-process"`` or ``"ray"``.
    database_url
        Where the bot's rows were written (a temporary database is gone once the call returns).
    """

    bot_equity: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    mode: str = "in-process"
    database_url: str = ""


def price_decimals(bars: pa.Table) -> int:
    """Return the fewest decimals (at most 8) that write every price of ``bars`` exactly.

    The simulator writes prices with its tick's decimals, as Binance does; the tick is chosen so
    that the bot reads back exactly the prices the backtest reads.
    """
    prices = np.concatenate(
        [bars.column(c).to_numpy().astype(np.float64) for c in ("open", "high", "low", "close")]
    )
    for decimals in range(_MAX_DECIMALS + 1):
        if np.array_equal(np.round(prices, decimals), prices):
            return decimals
    return _MAX_DECIMALS


def exchange_spec(
    symbol: str,
    bars: pa.Table,
    *,
    qty_step: float | None = None,
    min_notional: float | None = None,
) -> SymbolSpec:
    """Return the simulator's filters for ``bars``: Binance-like lot and minimums, exact tick.

    Raises
    ------
    InvalidInputError
        A ``qty_step`` or ``min_notional`` that is not positive (resp. negative).
    """
    closes = bars.column("close").to_numpy().astype(np.float64)
    spec = default_spec(symbol, float(np.median(closes)))
    tick = Decimal(1).scaleb(-price_decimals(bars))
    spec = dataclasses.replace(spec, tick_size=tick)
    if qty_step is not None:
        if not qty_step > 0:
            raise InvalidInputError("qty_step", f"must be positive, got {qty_step}", allowed="> 0")
        step = Decimal(repr(float(qty_step)))
        spec = dataclasses.replace(spec, step_size=step, min_qty=step)
    if min_notional is not None:
        if not min_notional >= 0:
            raise InvalidInputError(
                "min_notional", f"must not be negative, got {min_notional}", allowed=">= 0"
            )
        spec = dataclasses.replace(spec, min_notional=Decimal(repr(float(min_notional))))
    return spec


def create_bot(settings: Settings, spec: ReplaySpec, strategy: str, params: dict[str, Any]) -> int:
    """Create the replay's user, paper account and bot rows; return the bot's id."""
    cfg = spec.bot
    with db.session_scope(settings) as session:
        # One replay user per database (the email is unique); each replay gets its own bot.
        user = session.scalars(select(User).where(User.email == _REPLAY_USER)).first()
        if user is None:
            # "!" is no hash of any password: the replay user cannot log in.
            user = User(email=_REPLAY_USER, password_hash="!")  # noqa: S106
            session.add(user)
            session.flush()
        bots = session.scalars(select(Bot.id).where(Bot.user_id == user.id)).all()
        account = ExchangeAccount(
            user_id=user.id, name=f"replay {len(bots) + 1}", exchange="binance", mode="paper"
        )
        session.add(account)
        session.flush()
        bot = Bot(
            user_id=user.id,
            name=f"replay {len(bots) + 1}",
            trading_pair=spec.symbol,
            strategy=strategy[:100],
            params=params,
            timeframe=spec.timeframe,
            exchange_account_id=account.id,
            mode="paper",
            risk_per_trade=cfg.risk_per_trade_pct,
            max_position_size=cfg.max_position_pct,
            stop_loss=cfg.stop_loss_pct,
            take_profit=cfg.take_profit_pct,
            trailing_stop=cfg.trailing_stop_pct,
            starting_balance=cfg.starting_balance,
        )
        session.add(bot)
        session.flush()
        return int(bot.id)


def account_of(settings: Settings, bot_id: int) -> int:
    """Return the exchange account id of a bot."""
    with db.session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is None or bot.exchange_account_id is None:
            raise LookupError(f"bot {bot_id} has no exchange account")
        return int(bot.exchange_account_id)


@contextmanager
def simulator_for(bars: pa.Table, spec: ReplaySpec) -> Iterator[Any]:
    """Run the exchange simulator on ``bars`` (clock stopped at candle 1's open) in a thread."""
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    ts = bars.column("timestamp").to_numpy()
    with run_simulator_in_thread(
        {spec.symbol: bars},
        timeframe=spec.timeframe,
        start_ms=int(ts[1]),
        speed=0,
        specs={spec.symbol: spec.exchange},
        fee_rate=spec.bot.fee_rate,
    ) as sim:
        yield sim


async def run_in_process(
    settings: Settings,
    spec: ReplaySpec,
    signals: SignalSource,
    sim: Any,
    bars: pa.Table,
) -> None:
    """Trade every candle but the last with the bot runtime, the risk manager and a paper broker.

    The clock stands at candle 1's open when called; it is set to the open of candle t + 1 before
    the bot decides on candle t, and moves on only once the runtime has processed candle t.

    Raises
    ------
    RuntimeError
        The runtime did not process a candle the clock had closed (the handshake failed).
    """
    from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
    from cryptoorchestrator.platform.exchange.paper import PaperBroker

    cfg = spec.bot
    bot_id = cfg.bot_id
    series = tuple(
        bars.column(c).to_numpy().astype(np.int64 if c == "timestamp" else np.float64)
        for c in ("timestamp", "open", "high", "low", "close")
    )
    market = CcxtExecutionClient.for_exchange(
        "binance", api_url=sim.base_url, account_id=f"replay-{bot_id}", enable_rate_limit=False
    )
    # The replay is a bot process of its own: its batches are its bot's alone.
    process = BotProcess(settings)
    broker = PaperBroker(
        settings,
        account_of(settings, bot_id),
        market,
        fee_rate=cfg.fee_rate,
        # Fills are stamped with the simulator's time: the open of the candle they fill on.
        clock=lambda: datetime.fromtimestamp(sim.now() / 1000, UTC),
        fees_in_quote=True,
        quote_candle=spec.timeframe,
        # A strategy that shorts trades a margin account under the backtest's margin rule.
        max_gross_leverage=cfg.max_gross_leverage if cfg.allow_short else None,
        bookings=process.bookings,
    )
    await broker.fund({spec.symbol.split("/")[1].split(":")[0]: cfg.starting_balance})
    manager = RiskManager(spec.limits, TestClock())
    manager.register_bot(
        bot_id,
        equity=cfg.starting_balance,
        max_position_pct=cfg.max_position_pct,
        risk_per_trade_pct=min(cfg.risk_per_trade_pct, spec.limits.max_risk_per_trade_pct),
    )

    async def gate(check: OrderCheck) -> RiskDecision:
        return manager.approve(check)

    async def on_equity(equity: Decimal) -> None:
        # What the bot actor reports to the risk actor at the end of each candle.
        for cid in rt.drain_closed_orders():
            manager.order_closed(bot_id, cid)
        manager.update_position(bot_id, spec.symbol, equity - rt.ledger.cash)
        manager.update_equity(bot_id, equity)

    rt = BotRuntime(
        cfg,
        settings,
        broker,
        signals,
        gate,
        on_equity=on_equity,
        process=process,
        poll_interval_s=0.0,
    )
    tf_ms = timeframe_to_ms(spec.timeframe)
    tick = float(spec.exchange.tick_size)
    try:
        await rt.prepare()
        for t in range(len(series[0]) - 1):
            sim.set_time(int(series[0][t + 1]))
            await rt.poll_once()
            if rt.state.last_candle_ms != int(series[0][t]):
                raise RuntimeError(
                    f"the bot did not process candle {t} ({int(series[0][t])}): "
                    f"last processed {rt.state.last_candle_ms}"
                )
            touch = take_profit_touch_ms(rt, series, t + 1, tf_ms, tick)
            if touch is not None:
                sim.set_time(touch)
                await rt.poll_once()
    finally:
        try:
            await rt.close()
        finally:
            await process.close()


def take_profit_touch_ms(
    rt: BotRuntime, bars: tuple[np.ndarray, ...], i: int, tf_ms: int, tick: float
) -> int | None:
    """Return when candle ``i``'s price path first reaches the bot's take-profit, if it does.

    The level and the reason are the backtest kernel's for the whole candle (the stop wins over
    the take-profit inside one candle), rounded onto the exchange's tick towards the path, so
    the forming candle the bot sees has reached the level.  None: no position, no take-profit
    reached (a stop is the exchange's to fill), or a gap through the level (the bot already
    exited at the open).
    """
    stops = rt.position_stops()
    if stops is None or not stops.armed:
        return None
    ts, o, h, lo, c = (float(a[i]) for a in bars)
    reason, level = stops.check(int(ts), o, h, lo)
    if reason != nb.REASON_TAKE_PROFIT or level == o:
        return None
    # The kernel's level is on the exchange's tick already (rising to it: the first tick at or
    # above the distance's level); rounding it again is a no-op that guards a tickless state.
    long = stops.side > 0
    target = round_to_tick_nb(level, tick, long)
    # a long's target is reached by a rising price, a short's by a falling one (``buy``)
    frac = first_touch(o, h, lo, c, 0.0, 1.0, target, buy=not long)
    if frac is None:
        return None
    return int(ts) + min(max(math.ceil(frac * tf_ms), 1), tf_ms - 1)


def replay_result(
    settings: Settings,
    bot_id: int,
    bars: pa.Table,
    *,
    strategy: str,
    params: dict[str, Any],
    config: SimConfig,
    symbol: str,
    timeframe: str,
    mode: str,
) -> ReplayResult:
    """Build the result of a replayed bot from its recorded fills and equity snapshots.

    Orders, round trips, the equity at each close and the metrics are computed as the backtest
    engine computes them (``nb.simulate_1d_nb``), from the bot's fills instead of the engine's.
    """
    ts = bars.column("timestamp").to_numpy().astype(np.int64)
    close = bars.column("close").to_numpy().astype(np.float64)
    n = len(ts)
    tf_ms = timeframe_to_ms(timeframe)
    quote = symbol.split("/")[1].split(":")[0]
    with db.session_scope(settings) as session:
        rows = session.execute(
            select(Trade, Order.client_order_id)
            .join(Order, Trade.order_id == Order.id)
            .where(Trade.bot_id == bot_id)
            .order_by(Trade.timestamp, Trade.id)
        ).all()
        fills = [
            (
                int(t.timestamp.replace(tzinfo=UTC).timestamp() * 1000),
                t.side,
                float(t.amount),
                float(t.price),
                # in quote, as the backtest's (a fee in base is worth its amount at the price)
                float(t.fee) * (float(t.price) if t.fee_currency != quote else 1.0),
                cid,
            )
            for t, cid in rows
        ]
        snaps = session.execute(
            select(EquitySnapshot.timestamp, EquitySnapshot.equity).where(
                EquitySnapshot.bot_id == bot_id
            )
        ).all()
    bot_equity = np.full(n, np.nan)
    for snap_at, snap_equity in snaps:
        closed_ms = int(snap_at.replace(tzinfo=UTC).timestamp() * 1000)
        i = int(np.searchsorted(ts, closed_ms - tf_ms))
        if i < n:
            bot_equity[i] = float(snap_equity)
    orders = np.zeros((len(fills), nb.N_ORDER_FIELDS))
    trades: list[np.ndarray] = []
    equity = np.empty(n)
    cash, pos = config.init_cash, 0.0
    entry_price = entry_fee = 0.0
    entry_bar = 0
    fees = 0.0
    exposure = 0
    k = 0
    for i in range(n):
        while k < len(fills) and fills[k][0] < ts[i] + tf_ms:
            _, side, qty, price, fee, cid = fills[k]
            tag = cid.rsplit("-", 1)[-1]
            reason = _REASON_BY_TAG.get(tag, nb.REASON_SIGNAL)
            buy = side == "buy"
            orders[k] = (i, 0, 1.0 if buy else -1.0, qty, price, fee, reason)
            fees += fee
            cash += -(qty * price + fee) if buy else qty * price - fee
            if pos == 0.0:
                # opens a position (a bot opens and closes whole positions, one order each)
                pos = qty if buy else -qty
                entry_price, entry_fee, entry_bar = price, fee, i
            else:
                direction = 1.0 if pos > 0 else -1.0
                pnl = direction * qty * (price - entry_price) - entry_fee - fee
                trades.append(
                    _trade(
                        entry_bar,
                        i,
                        entry_price,
                        price,
                        qty,
                        pnl,
                        entry_fee + fee,
                        reason,
                        direction,
                    )
                )
                pos += qty if buy else -qty
                if abs(pos) <= qty * 1e-12:
                    pos = 0.0
            k += 1
        equity[i] = cash + pos * close[i]
        if pos != 0.0:
            exposure += 1
    if pos != 0.0:
        direction = 1.0 if pos > 0 else -1.0
        pnl = pos * (close[-1] - entry_price) - entry_fee
        trades.append(
            _trade(
                entry_bar,
                n - 1,
                entry_price,
                close[-1],
                abs(pos),
                pnl,
                entry_fee,
                nb.REASON_END,
                direction,
            )
        )
        trades[-1][nb.T_OPEN] = 1.0
    trade_records = np.array(trades) if trades else np.zeros((0, nb.N_TRADE_FIELDS))
    stats = nb.equity_stats_nb(equity, config.init_cash)
    nb._trade_stats_nb(trade_records, stats)  # noqa: SLF001 (the engine's own statistics)
    stats[nb.S_EXPOSURE_BARS] = exposure
    stats[nb.S_ORDERS] = len(fills)
    stats[nb.S_FEES] = fees
    ppy = annualisation(ts, timeframe)
    return ReplayResult(
        strategy=strategy,
        params=params,
        config=config,
        symbols=(symbol,),
        timeframe=timeframe,
        metrics=metrics_from_stats(stats, config.init_cash, ppy),
        equity=equity,
        timestamp=ts,
        close=close.reshape(-1, 1),
        order_records=orders,
        trade_records=trade_records,
        bot_equity=bot_equity,
        mode=mode,
        database_url=settings.database_url,
    )


def _trade(
    entry_bar: int,
    exit_bar: int,
    entry_price: float,
    exit_price: float,
    qty: float,
    pnl: float,
    fees: float,
    reason: int,
    direction: float = 1.0,
) -> np.ndarray:
    rec = np.zeros(nb.N_TRADE_FIELDS)
    rec[nb.T_DIR] = direction
    rec[nb.T_ENTRY_BAR] = entry_bar
    rec[nb.T_EXIT_BAR] = exit_bar
    rec[nb.T_ENTRY_PRICE] = entry_price
    rec[nb.T_EXIT_PRICE] = exit_price
    rec[nb.T_QTY] = qty
    rec[nb.T_PNL] = pnl
    rec[nb.T_RETURN] = pnl / (qty * entry_price)
    rec[nb.T_FEES] = fees
    rec[nb.T_EXIT_REASON] = reason
    return rec


__all__ = [
    "ReplayResult",
    "ReplaySpec",
    "account_of",
    "create_bot",
    "exchange_spec",
    "price_decimals",
    "take_profit_touch_ms",
    "replay_result",
    "run_in_process",
    "simulator_for",
    "temporary_settings",
]
