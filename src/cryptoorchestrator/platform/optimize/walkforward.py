"""Walk-forward analysis: fold splitting, a study per fold, out-of-sample evaluation, stitching."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cryptoorchestrator.platform.backtest.evaluate import evaluate
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize import store as study_store
from cryptoorchestrator.platform.optimize.executor import BatchExecutor, run_study
from cryptoorchestrator.platform.optimize.results import OptimizationResult, WalkForwardResult
from cryptoorchestrator.platform.optimize.study import StudySpec
from cryptoorchestrator.platform.optimize.trials import BarArrays, TrialConfig
from cryptoorchestrator.platform.settings import Settings
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


def walk_forward(
    spec: StudySpec,
    folds: Sequence[Fold],
    executor: BatchExecutor,
    *,
    settings: Settings | None = None,
    progress: bool = True,
    cancel_event: threading.Event | None = None,
) -> WalkForwardResult:
    """Optimise ``spec`` on each fold's train window; evaluate the best on its test window.

    Each fold is the study ``spec`` restricted to ``bars[train_start:train_stop]`` (its own key,
    named ``<name>:fold<k>``), run on ``executor`` as :func:`~.executor.run_study` runs it.  A
    fold's out-of-sample result is ``co.backtest(strategy, bars[train_start:test_stop],
    params, config=sim, warmup=test_start - train_start)``: the same floats, stops included.
    A fold with no succeeded trial stays in cash; a cancelled or failed fold ends the analysis.
    """
    arrays = spec.bars
    cfg = spec.config
    out: list[dict[str, Any]] = []
    studies: list[OptimizationResult] = []
    curves: list[np.ndarray] = []
    for fold in folds:
        fold_spec = dataclasses.replace(
            spec, name=f"{spec.name}:fold{fold.index}", window=(fold.train_start, fold.train_stop)
        )
        res = run_study(
            fold_spec, executor, settings=settings, progress=progress, cancel_event=cancel_event
        )
        studies.append(res)
        bt = res.best_trial
        row: dict[str, Any] = {
            "fold": fold.index,
            "train_start": fold.train_start,
            "train_stop": fold.train_stop,
            "test_start": fold.test_start,
            "test_stop": fold.test_stop,
            "params": bt.params if bt else None,
            "is_value": bt.value if bt else None,
            "is_metrics": bt.metrics if bt else None,
            "oos_metrics": None,
            "oos_value": None,
        }
        if bt is not None:
            win = evaluate_window(
                spec.strategy,
                arrays,
                bt.params,
                cfg,
                fold.test_start,
                fold.test_stop,
                warmup_start=fold.train_start,
            )
            row["oos_metrics"] = win.metrics
            row["oos_value"] = spec.objective.value(win.metrics)
            curves.append(win.equity)
        else:  # nothing tradable in this fold: stay in cash out of sample
            curves.append(np.full(fold.test_stop - fold.test_start, cfg.sim.init_cash))
        out.append(row)
        if res.status != study_store.SUCCEEDED:
            break
    equity = stitch_equity(curves, cfg.sim.init_cash)
    ts = arrays.timestamp[folds[0].test_start : folds[0].test_start + equity.size]
    return WalkForwardResult(out, equity, ts, studies)
