"""Live signals: a strategy from the registry evaluated exactly as a backtest evaluates it.

A live bot hands the window of closed candles to the strategy's own vectorised ``signals`` (in
the guard that turns user exceptions into ``StrategyError``) and reads the last bar.  Nothing is
re-implemented for live trading, so a bot decides on bar t what the backtest decided on bar t,
provided the window covers the strategy's warm-up: the bot keeps
``strategy.required_window(params)`` closed candles (see ``platform.strategy.base``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cryptoorchestrator.platform.bots.runtime import LiveSignal, SignalSource
from cryptoorchestrator.platform.strategy.bars import as_bars
from cryptoorchestrator.platform.strategy.base import Strategy, run_signals
from cryptoorchestrator.strategies.registry import get_strategy, registered_strategy


def _last(arr: np.ndarray | None) -> bool:
    return bool(arr[-1]) if arr is not None and len(arr) else False


def _instance(strategy: Any) -> Strategy:
    # A name comes from a bot row, which a tenant wrote: only registered names resolve, and a
    # path or module reference stored there is refused, never imported.
    return registered_strategy(strategy) if isinstance(strategy, str) else get_strategy(strategy)


def last_bar_signals(strategy: Any, params: Mapping[str, Any]) -> SignalSource:
    """Return a signal source for ``strategy`` (registered name, class or instance) with ``params``.

    Raises
    ------
    InvalidInputError
        For a name that is not registered or parameters outside the declared ranges, before any
        trading.
    """
    instance = _instance(strategy)
    checked = instance.validate_params(params)

    defaults = (instance.stop_loss, instance.take_profit, instance.trailing_stop)

    def evaluate(bars: dict[str, np.ndarray]) -> LiveSignal:
        signals = run_signals(instance, as_bars(bars), checked)
        # Per-bar stops of the last bar, else the class defaults: the backtest's precedence
        # below the bot's own settings (which the runtime applies on top).
        stops = [
            _stop_at_last(per_bar, default)
            for per_bar, default in zip(signals[4:7], defaults, strict=True)
        ]
        return LiveSignal(
            _last(signals.long_entries),
            _last(signals.long_exits),
            _last(signals.short_entries),
            _last(signals.short_exits),
            *stops,
        )

    return evaluate


def _stop_at_last(per_bar: np.ndarray | None, default: float | None) -> float:
    if per_bar is not None and len(per_bar):
        return float(per_bar[-1])
    return math.nan if default is None else float(default)


def required_window(strategy: Any, params: Mapping[str, Any]) -> int:
    """Return how many closed candles a live bot keeps for ``strategy`` with ``params``.

    The strategy's own :meth:`~cryptoorchestrator.platform.strategy.base.Strategy.required_window`
    on the validated parameters.

    Raises
    ------
    InvalidInputError
        For a name that is not registered or parameters outside the declared ranges.
    """
    instance = _instance(strategy)
    return int(instance.required_window(instance.validate_params(params)))
