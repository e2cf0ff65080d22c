"""``co.replay``: the real bot runtime replaying candles on the exchange simulator.

>>> import cryptoorchestrator as co
>>> res = co.replay("sma_cross", bars, params={"fast": 10, "slow": 30}, fee_bps=10)
>>> bt = co.backtest("sma_cross", bars, params={"fast": 10, "slow": 30}, config=res.config)
>>> fills = lambda r: [(o["bar"], o["side"], o["price"]) for o in r.orders.to_pylist()]
>>> fills(res) == fills(bt)   # the bot trades what the backtest trades
True

The bot runtime, the risk manager, a paper broker and ccxt's ``binance`` client trade the candles
served by the exchange simulator, stepped candle by candle as fast as the runtime decides (see
:mod:`cryptoorchestrator.platform.bots.replay`).  By default everything runs in this process;
``ray=True`` runs the same replay in a Ray worker process (the result is the same).  The
result's ``config`` is the backtest configuration that the bot's settings mirror.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from cryptoorchestrator.cluster.signals import last_bar_signals, required_window
from cryptoorchestrator.platform.backtest.engine import SimConfig, SizeMode
from cryptoorchestrator.platform.bots.replay import (
    ReplayResult,
    ReplaySpec,
    create_bot,
    exchange_spec,
    replay_result,
    run_in_process,
    simulator_for,
    temporary_settings,
)
from cryptoorchestrator.platform.bots.runtime import BotSettings
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.risk.limits import RiskLimits
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.strategy.bars import as_bars
from cryptoorchestrator.platform.strategy.base import Strategy
from cryptoorchestrator.strategies.registry import get_strategy

__all__ = ["ReplayResult", "replay"]

#: Risk limits of a replay: every order of the strategy is judged, none is capped by rate,
#: loss or drawdown limits (they would halt the bot where the backtest trades on).
REPLAY_LIMITS = RiskLimits(
    max_orders_per_minute=10_000,
    max_daily_loss_pct=Decimal(100),
    max_drawdown_pct=Decimal(100),
    portfolio_max_daily_loss_pct=Decimal(100),
    portfolio_max_drawdown_pct=Decimal(100),
)


def _pct(value: float, name: str) -> Decimal:
    if not 0 < value <= 1:
        raise InvalidInputError(name, f"must be in (0, 1], got {value}", allowed="(0, 1]")
    return Decimal(repr(float(value))) * 100


def _stop_pct(value: float | None, name: str) -> Decimal | None:
    if value is None:
        return None
    if not 0 < value < 1:
        raise InvalidInputError(name, f"must be in (0, 1), got {value}", allowed="(0, 1)")
    return Decimal(repr(float(value))) * 100


def _bot_settings(
    *,
    symbol: str,
    timeframe: str,
    init_cash: float,
    fee_bps: float,
    sizing: SizeMode,
    size: float,
    max_position: float,
    stop_loss: float | None,
    take_profit: float | None,
    trailing_stop: float | None,
    window: int,
    allow_short: bool = False,
) -> BotSettings:
    """The bot settings that size and exit as the backtest's ``sizing``/``size`` do."""
    if sizing == "fraction":
        if stop_loss is not None:
            raise InvalidInputError(
                "sizing",
                "a bot with a stop-loss sizes by risk: use sizing='risk'",
                allowed="'risk' with stop_loss",
            )
        max_position_pct, risk_pct = _pct(size, "size"), Decimal(1)
    elif sizing == "risk":
        if stop_loss is None:
            raise InvalidInputError(
                "stop_loss", "risk sizing needs a stop-loss", allowed="a fraction in (0, 1)"
            )
        max_position_pct, risk_pct = _pct(max_position, "max_position"), _pct(size, "size")
        cap = REPLAY_LIMITS.max_risk_per_trade_pct
        if risk_pct > cap:
            # The risk manager would deny every entry: no bot may risk more per trade.
            raise InvalidInputError(
                "size", f"risks {risk_pct} % of equity per trade", allowed=f"<= {cap / 100}"
            )
    else:
        raise InvalidInputError(
            "sizing", f"a bot cannot size by {sizing!r}", allowed=["fraction", "risk"]
        )
    if not init_cash > 0:
        raise InvalidInputError("init_cash", f"must be positive, got {init_cash}", allowed="> 0")
    if not 0 <= fee_bps < 10_000:
        raise InvalidInputError("fee_bps", f"must be in [0, 10000), got {fee_bps}")
    return BotSettings(
        bot_id=0,
        symbol=symbol,
        timeframe=timeframe,
        exchange="binance",
        starting_balance=Decimal(repr(float(init_cash))),
        max_position_pct=max_position_pct,
        risk_per_trade_pct=risk_pct,
        stop_loss_pct=_stop_pct(stop_loss, "stop_loss"),
        take_profit_pct=_stop_pct(take_profit, "take_profit"),
        trailing_stop_pct=_stop_pct(trailing_stop, "trailing_stop"),
        fee_rate=Decimal(repr(float(fee_bps))) / 10_000,
        window=window,
        allow_short=allow_short,
    )


def replay(
    strategy: str | type[Strategy] | Strategy,
    bars: Any,
    params: Mapping[str, Any] | None = None,
    *,
    fee_bps: float = 0.0,
    init_cash: float = 10_000.0,
    sizing: SizeMode = "fraction",
    size: float = 1.0,
    max_position: float = 1.0,
    stop_loss: float | None = None,
    take_profit: float | None = None,
    trailing_stop: float | None = None,
    qty_step: float | None = None,
    min_notional: float | None = None,
    symbol: str = "BTC/USDT",
    timeframe: str | None = None,
    window: int | None = None,
    database_url: str | None = None,
    ray: bool = False,
) -> ReplayResult:
    """Replay ``bars`` through the real bot runtime on the exchange simulator; return its trades.

    The bot (paper account funded with ``init_cash``) decides on each closed candle as a live
    bot does, its orders pass the risk manager and fill on the paper broker at the next
    candle's open (fees in quote, ``fee_bps``), and its recorded fills are returned in the shape
    of :func:`cryptoorchestrator.backtest`'s result; ``result.config`` is the equivalent backtest
    configuration (lot step and minimum notional of the simulated exchange included).

    Parameters
    ----------
    strategy, bars, params
        As :func:`cryptoorchestrator.backtest` (one symbol; bars need at least two candles).
    fee_bps, init_cash, sizing, size, max_position, stop_loss, take_profit, trailing_stop
        As the backtest's; ``sizing`` is ``"fraction"`` (no stop-loss) or ``"risk"`` (with one),
        the two ways a bot sizes.  A strategy whose ``short`` parameter is true trades a paper
        margin account (unlevered: the backtest's default margin rule) and shorts as the
        backtest with ``allow_short=True`` does; otherwise the account is spot, and the
        backtest's ``allow_short`` is False.
    qty_step, min_notional
        The simulated exchange's lot step and minimum order value (default: Binance-like for the
        price level, e.g. 0.00001 and 5 for BTC/USDT).
    symbol, timeframe
        The market the bot trades and the candles' interval (default: inferred).
    window
        Closed candles the bot evaluates the strategy on (default: the strategy's
        ``required_window``, as a live bot; fewer candles so far: all of them).
    database_url
        Where the bot's orders, fills and snapshots go (default: a temporary SQLite database,
        deleted on return).  A given database is migrated first.
    ray
        Run the replay in a Ray worker process instead of this one.

    Raises
    ------
    InvalidInputError
        Bad bars, parameters or settings (named with what is allowed).
    NotFoundError
        Unknown strategy name.
    """
    strat = get_strategy(strategy)
    checked = strat.validate_params(params)
    series = as_bars(bars, symbol=symbol, timeframe=timeframe)
    if len(series) < 2:
        raise InvalidInputError("bars", "a replay needs at least two candles", allowed=">= 2")
    table = series.to_table()
    from cryptoorchestrator.platform.backtest.runner import infer_timeframe

    tf = timeframe or series.timeframe or infer_timeframe(series.timestamp)
    if tf is None:
        raise InvalidInputError("timeframe", "cannot tell the candles' interval; give timeframe")
    if window is None:
        window = required_window(strat, checked)
    shorts = bool(checked.get("short", False))
    if window < 1:
        raise InvalidInputError("window", f"must be positive, got {window}", allowed=">= 1")
    bot = _bot_settings(
        symbol=symbol,
        timeframe=tf,
        init_cash=init_cash,
        fee_bps=fee_bps,
        sizing=sizing,
        size=size,
        max_position=max_position,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        window=window,
        allow_short=shorts,
    )
    exchange = exchange_spec(symbol, table, qty_step=qty_step, min_notional=min_notional)
    spec = ReplaySpec(symbol=symbol, timeframe=tf, bot=bot, exchange=exchange, limits=REPLAY_LIMITS)
    config = SimConfig(
        init_cash=init_cash,
        fee_bps=fee_bps,
        size_mode=sizing,
        size=size,
        max_position=max_position if sizing == "risk" else 1.0,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        qty_step=float(exchange.step_size),
        min_qty=float(exchange.min_qty),
        min_notional=float(exchange.min_notional),
        price_tick=float(exchange.tick_size),
        allow_short=shorts,
    )
    name = strat.name or type(strat).__name__
    job = _Replay(strat, checked, table, spec, config, name)
    if ray:
        return _on_ray(job, database_url)
    return job.run(database_url, "in-process")


class _Replay:
    """One replay's inputs, picklable to run in a Ray worker."""

    def __init__(
        self,
        strategy: Strategy,
        params: dict[str, Any],
        bars: pa.Table,
        spec: ReplaySpec,
        config: SimConfig,
        name: str,
    ) -> None:
        self.strategy = strategy
        self.params = params
        self.bars = bars
        self.spec = spec
        self.config = config
        self.name = name

    def run(self, database_url: str | None, mode: str) -> ReplayResult:
        """Replay into ``database_url`` (None: a temporary SQLite database); return the result."""
        if database_url is not None:
            settings = Settings(database_url=database_url)
            db.upgrade(settings)
            return self._run_in(settings, mode)
        with tempfile.TemporaryDirectory(prefix="cryptoorch-replay-") as tmp:
            settings = temporary_settings(Path(tmp))
            try:
                return self._run_in(settings, mode)
            finally:
                db.dispose_engine(settings)

    def _run_in(self, settings: Settings, mode: str) -> ReplayResult:
        bot_id = create_bot(settings, self.spec, self.name, self.params)
        spec = ReplaySpec(
            symbol=self.spec.symbol,
            timeframe=self.spec.timeframe,
            bot=_with_id(self.spec.bot, bot_id),
            exchange=self.spec.exchange,
            limits=self.spec.limits,
        )
        signals = last_bar_signals(self.strategy, self.params)
        with simulator_for(self.bars, spec) as sim:
            _run_coroutine(lambda: run_in_process(settings, spec, signals, sim, self.bars))
        return replay_result(
            settings,
            bot_id,
            self.bars,
            strategy=self.name,
            params=self.params,
            config=self.config,
            symbol=spec.symbol,
            timeframe=spec.timeframe,
            mode=mode,
        )


def _with_id(bot: BotSettings, bot_id: int) -> BotSettings:
    from dataclasses import replace

    return replace(bot, bot_id=bot_id)


def _run_coroutine(make: Any) -> None:
    """Run ``make()`` to completion on a fresh event loop (a thread of its own when this thread
    already runs one, as a notebook does)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(make())
        return
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(make())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name="replay")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _on_ray(job: _Replay, database_url: str | None) -> ReplayResult:
    """Run ``job`` in a Ray worker process (connecting to or starting the local cluster)."""
    import ray as ray_module

    from cryptoorchestrator.cluster.runtime import ensure_ray

    ensure_ray()

    @ray_module.remote(num_cpus=1, max_retries=0)
    def run_remote(job: _Replay, database_url: str | None) -> ReplayResult:
        return job.run(database_url, "ray")

    result: ReplayResult = ray_module.get(run_remote.remote(job, database_url))
    return result
