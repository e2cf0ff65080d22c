"""The notebook SDK: ``co.backtest``, ``co.check_lookahead``, ``co.get_strategy``, and
``co.list_strategies``.

>>> import cryptoorchestrator as co
>>> res = co.backtest("sma_cross", bars, params={"fast": 10, "slow": 50}, fee_bps=10)
>>> res.metrics["sharpe"], res.trades.to_pandas(), res.plot("report.png")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptoorchestrator.platform.backtest.engine import FillMode, SimConfig, SizeMode
from cryptoorchestrator.platform.backtest.result import BacktestResult
from cryptoorchestrator.platform.backtest.runner import run_backtest
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.model.ohlcv import OHLCV_COLUMNS
from cryptoorchestrator.platform.strategy.bars import Bars, as_bars
from cryptoorchestrator.platform.strategy.base import Strategy
from cryptoorchestrator.platform.strategy.lookahead import LookaheadReport
from cryptoorchestrator.platform.strategy.lookahead import check_lookahead as _check
from cryptoorchestrator.strategies.registry import get_strategy, list_strategies

__all__ = ["backtest", "check_lookahead", "get_strategy", "list_strategies"]


def _is_multi(bars: Any) -> bool:
    # a mapping keyed by column names is one symbol's data; any other mapping is per-symbol
    if not isinstance(bars, Mapping) or not bars:
        return False
    return not ({str(k).lower() for k in bars} & {*OHLCV_COLUMNS, "date"})


def _to_bars(data: Any, symbol: str | None, timeframe: str | None) -> Bars:
    return as_bars(data, symbol=symbol, timeframe=timeframe)


def backtest(
    strategy: str | type[Strategy] | Strategy,
    bars: Any,
    params: Mapping[str, Any] | None = None,
    *,
    fee_bps: float = DEFAULT_FEE_BPS,
    slippage_bps: float = 0.0,
    init_cash: float = 10_000.0,
    fill: FillMode = "next_open",
    sizing: SizeMode = "fraction",
    size: float = 1.0,
    max_position: float = 1.0,
    max_open_positions: int | None = None,
    stop_loss: float | None = None,
    take_profit: float | None = None,
    trailing_stop: float | None = None,
    qty_step: float | tuple[float, ...] = 0.0,
    min_qty: float | tuple[float, ...] = 0.0,
    min_notional: float | tuple[float, ...] = 0.0,
    price_tick: float | tuple[float, ...] = 0.0,
    close_at_end: bool = False,
    allow_short: bool = True,
    symbol: str | None = None,
    timeframe: str | None = None,
    config: SimConfig | None = None,
    warmup: int = 0,
) -> BacktestResult:
    """Backtest a strategy (name, class or instance) on bars and return the result.

    ``bars`` is a pyarrow table (``OHLCV_SCHEMA``), a pandas DataFrame, a dict of arrays, a 2-D
    array ``(n, 5|6)``, a 1-D array of closes, a ``Bars``, or ``{symbol: any of those}`` for
    several symbols sharing one cash balance.  Fees and slippage are in basis points; fills
    happen at the next bar's open unless ``fill="close"``.  ``sizing`` is ``"fraction"`` (of
    equity), ``"quote"`` (a fixed amount) or ``"risk"`` (share of equity lost at the stop).
    A ready ``config`` replaces all the engine keywords.  ``timeframe`` (``"1h"``...) sets the
    annualisation of the metrics; it is required when the bars carry no timestamps, and must
    match their spacing when they do (timestamps in s, ms, us or ns are recognised).  The fee
    defaults to Binance spot's taker fee
    (:data:`~cryptoorchestrator.platform.model.fees.DEFAULT_FEE_BPS`), as in the CLI, the API and
    ``co.optimize``.  The first ``warmup`` bars only warm the indicators; trading and metrics
    cover the rest (a walk-forward test window is this backtest of its train + test bars).

    Raises
    ------
    InvalidInputError
        Bad bars, parameters or settings, or no timestamps and no ``timeframe``; the message
        names the field and what is allowed.
    NotFoundError
        Unknown strategy name.
    StrategyError
        The strategy's code raised.
    """
    strat = get_strategy(strategy)
    if config is None:
        config = SimConfig(
            init_cash=init_cash,
            fee_bps=fee_bps,
            slippage_bps=slippage_bps,
            fill=fill,
            size_mode=sizing,
            size=size,
            max_position=max_position,
            max_open_positions=max_open_positions,
            stop_loss=stop_loss,
            take_profit=take_profit,
            trailing_stop=trailing_stop,
            qty_step=qty_step,
            min_qty=min_qty,
            min_notional=min_notional,
            price_tick=price_tick,
            close_at_end=close_at_end,
            allow_short=allow_short,
        )
    if _is_multi(bars):
        series = {str(k): _to_bars(v, str(k), timeframe) for k, v in bars.items()}
        return run_backtest(
            strat, series, params, config=config, timeframe=timeframe, warmup=warmup
        )
    return run_backtest(
        strat,
        _to_bars(bars, symbol, timeframe),
        params,
        config=config,
        timeframe=timeframe,
        warmup=warmup,
    )


def check_lookahead(
    strategy: str | type[Strategy] | Strategy,
    bars: Any,
    params: Mapping[str, Any] | None = None,
    *,
    n_checks: int = 20,
    every_bar: bool = False,
    timeframe: str | None = None,
) -> LookaheadReport:
    """Test that signals and stops up to bar t ignore bars after t; name the first bad bar.

    Tries the prefix ends at every bar where a signal or stop changes, the bar before it, the
    first and last bars and ``n_checks`` spread bars, or every bar with ``every_bar=True``; see
    :func:`cryptoorchestrator.platform.strategy.lookahead.check_lookahead`. ``timeframe`` is
    needed only for bars without timestamps, as in :func:`backtest`.

    Raises
    ------
    InvalidInputError, NotFoundError, StrategyError
        As :func:`backtest`.
    """
    strat = get_strategy(strategy)
    checked = strat.validate_params(params)
    return _check(
        strat, _to_bars(bars, None, timeframe), checked, n_checks=n_checks, every_bar=every_bar
    )
