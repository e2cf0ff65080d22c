"""Walk-forward analysis: train/test fold splitting, out-of-sample evaluation and stitching."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cryptoorchestrator.platform.backtest.evaluate import evaluate
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.trials import BarArrays, TrialConfig
from cryptoorchestrator.platform.strategy.base import Strategy

Mode = Literal["rolling", "anchored"]


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: optimise on ``[train_start, train_stop)``, test on the next window."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int


def split_folds(
    n_bars: int,
    n_folds: int,
    *,
    train_frac: float = 0.7,
    mode: Mode = "rolling",
) -> list[Fold]:
    """Split ``n_bars`` into ``n_folds`` consecutive train/test folds.

    Test windows are consecutive, equal and do not overlap; together with the first train
    window they cover every bar.  ``rolling`` train windows have a fixed length and slide;
    ``anchored`` ones all start at bar 0 and grow.  ``train_frac`` is the share of the first
    fold (train + test) given to training.

    Raises
    ------
    InvalidInputError
        If a window would be empty.
    """
    if mode not in ("rolling", "anchored"):
        raise InvalidInputError(
            "mode", f"unknown walk-forward mode {mode!r}", allowed=("rolling", "anchored")
        )
    if not isinstance(n_folds, int) or n_folds < 1:
        raise InvalidInputError("n_folds", f"must be >= 1, got {n_folds!r}", allowed=">= 1")
    if not 0 < train_frac < 1:
        raise InvalidInputError(
            "train_frac", f"must be in (0, 1), got {train_frac!r}", allowed="0 < train_frac < 1"
        )
    # train + n_folds * test = n_bars and train = train_frac / (1 - train_frac) * test
    ratio = train_frac / (1.0 - train_frac)
    test = int(n_bars // (n_folds + ratio))
    train = n_bars - n_folds * test
    if test < 2 or train < 2:
        raise InvalidInputError(
            "n_folds",
            f"{n_bars} bars are too few for {n_folds} folds",
            allowed="fewer folds or more bars",
        )
    folds = []
    for k in range(n_folds):
        test_start = train + k * test
        train_start = 0 if mode == "anchored" else test_start - train
        folds.append(Fold(k, train_start, test_start, test_start, test_start + test))
    return folds


@dataclass
class WindowResult:
    """Metrics and equity of one parameter set on one window."""

    metrics: dict[str, float]
    equity: np.ndarray


def evaluate_window(
    strategy: Strategy,
    bars: BarArrays,
    params: Mapping[str, Any],
    config: TrialConfig,
    start: int,
    stop: int,
    *,
    warmup_start: int = 0,
) -> WindowResult:
    """Backtest ``params`` on bars ``[start, stop)``.

    Signals and per-bar stops are computed from ``warmup_start`` so that indicators are warm
    when the window opens (they only use past bars, so this adds no look-ahead); trading starts
    at ``start``.  This is ``co.backtest`` on bars ``[warmup_start, stop)`` with
    ``warmup=start - warmup_start`` (one contract:
    :func:`~cryptoorchestrator.platform.backtest.evaluate.evaluate`).

    Raises
    ------
    InvalidInputError
        If the parameters are rejected or the window is empty.
    StrategyError
        If the strategy's code raises.
    """
    ev = evaluate(
        strategy,
        bars.window(warmup_start, stop),
        params,
        config.sim,
        periods_per_year=config.periods_per_year,
        start=start - warmup_start,
    )
    return WindowResult(ev.metrics, ev.output.equity)


def stitch_equity(curves: list[np.ndarray], init_cash: float) -> np.ndarray:
    """Chain test-window equity curves: each fold continues from the previous fold's end.

    Every curve starts from ``init_cash``; fold ``k`` is scaled by the growth of folds ``< k``,
    as if the out-of-sample capital had been carried forward.
    """
    out = []
    scale = 1.0
    for curve in curves:
        out.append(curve * scale)
        if curve.size:
            scale *= float(curve[-1]) / init_cash
    return np.concatenate(out) if out else np.empty(0)
