"""Live signals: a strategy from the registry evaluated exactly as a backtest evaluates it.

A live bot hands the window of closed candles to the strategy's own vectorised ``signals`` (in
the guard that turns user exceptions into ``StrategyError``) and reads the last bar.  Nothing is
re-implemented for live trading, so a bot decides on bar t what the backtest decided on bar t,
provided the window covers the strategy's warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cryptoorchestrator.platform.bots.runtime import SignalSource
from cryptoorchestrator.platform.strategy.bars import as_bars
from cryptoorchestrator.platform.strategy.base import run_signals
from cryptoorchestrator.strategies.registry import get_strategy


def _last(arr: np.ndarray | None) -> bool:
    return bool(arr[-1]) if arr is not None and len(arr) else False


def last_bar_signals(strategy: Any, params: Mapping[str, Any]) -> SignalSource:
    """Return a signal source for ``strategy`` (name, class or instance) with ``params``.

    Raises
    ------
    InvalidInputError / NotFoundError
        For an unknown strategy or parameters outside its declared ranges, before any trading.
    """
    instance = get_strategy(strategy)
    checked = instance.validate_params(params)

    def evaluate(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        signals = run_signals(instance, as_bars(bars), checked)
        return (
            _last(signals.long_entries),
            _last(signals.long_exits),
            _last(signals.short_entries),
            _last(signals.short_exits),
        )

    return evaluate


def required_window(strategy: Any, params: Mapping[str, Any], minimum: int = 200) -> int:
    """Return how many closed candles a live bot should keep for ``strategy``.

    The declared ``warmup`` when the strategy has one, else four times its largest integer
    parameter (recursive indicators such as EMA converge well within that), at least ``minimum``.
    """
    instance = get_strategy(strategy)
    checked = instance.validate_params(params)
    if instance.warmup:
        return max(int(instance.warmup) + 1, minimum)
    ints = [int(v) for v in checked.values() if isinstance(v, int) and not isinstance(v, bool)]
    return max(4 * max(ints, default=0), minimum)
