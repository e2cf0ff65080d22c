"""The public study functions (``co.optimize``, ``co.walk_forward``, ``open_study``).

:class:`Optimizer` turns their keywords into a validated :class:`~.study.StudySpec` and runs it
with :func:`~.executor.run_study` or :func:`~.walkforward.walk_forward` on the executor the
caller names.  It knows no executor but :class:`~.executor.SerialExecutor`: the others (Ray)
and the way a strategy name is resolved come in through the constructor, so this module needs
neither Ray nor the strategy registry.  ``cryptoorchestrator.cluster.optimize`` builds the one
behind ``co.optimize``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.optimize import walkforward
from cryptoorchestrator.platform.optimize.executor import BatchExecutor, SerialExecutor, run_study
from cryptoorchestrator.platform.optimize.objective import ObjectiveFn
from cryptoorchestrator.platform.optimize.results import OptimizationResult, WalkForwardResult
from cryptoorchestrator.platform.optimize.sampling import ConstraintSpec
from cryptoorchestrator.platform.optimize.study import (
    DEFAULT_BATCH_TARGET_S,
    build_study,
    open_study_run,
)
from cryptoorchestrator.platform.optimize.trials import BarArrays, bars_to_arrays
from cryptoorchestrator.platform.optimize.walkforward import Mode, split_folds
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.strategy.base import Strategy

#: The executors a study may name; "serial" is always there.
Executor = Literal["ray", "serial"]


class ExecutorFactory(Protocol):
    """Make a parallel executor (connecting to its cluster first)."""

    def __call__(
        self, settings: Settings | None, num_cpus: int | None, shared: BarArrays | None
    ) -> BatchExecutor:
        """Return an executor; ``shared`` are bars several studies will run on (walk-forward)."""
        ...


class Optimizer:
    """Validate studies and run them on a named executor.

    Parameters
    ----------
    resolve_strategy
        Returns the strategy a name, class or instance designates (the strategy registry).
    executors
        The parallel executors by name; ``"serial"`` (this process) needs none.
    """

    def __init__(
        self,
        resolve_strategy: Callable[[Any], Any],
        executors: Mapping[str, ExecutorFactory],
    ) -> None:
        self._resolve = resolve_strategy
        self._executors = dict(executors)

    def strategy(self, strategy: Any) -> Strategy:
        """Return the :class:`Strategy` ``strategy`` designates.

        Trials, windows and backtests share one evaluation contract, which needs a real
        ``Strategy`` (declared parameters, stops, the guard), so anything else is refused.

        Raises
        ------
        InvalidInputError
            Naming ``strategy``, if it designates no ``Strategy``.
        """
        strat = self._resolve(strategy)
        if not isinstance(strat, Strategy):
            raise InvalidInputError(
                "strategy",
                f"{strategy!r} is not a Strategy",
                allowed="a strategy name, Strategy subclass or instance",
            )
        return strat

    def executor(
        self,
        name: str,
        settings: Settings | None,
        num_cpus: int | None,
        shared: BarArrays | None = None,
    ) -> BatchExecutor:
        """Return the executor called ``name`` (see :class:`ExecutorFactory` for the rest).

        Raises
        ------
        InvalidInputError
            Naming ``executor``, for a name that is neither "serial" nor a known executor.
        """
        if name == "serial":
            return SerialExecutor()
        factory = self._executors.get(name)
        if factory is None:
            allowed = (*self._executors, "serial")
            raise InvalidInputError("executor", f"unknown executor {name!r}", allowed=allowed)
        return factory(settings, num_cpus, shared)

    def optimize(
        self,
        strategy: Any,
        bars: Any,
        *,
        space: Mapping[str, Any] | Sequence[str],
        constraint: ConstraintSpec = None,
        objective: str | ObjectiveFn = "sharpe",
        minimize: bool | None = None,
        method: str = "grid",
        n_trials: int | None = None,
        seed: int | None = None,
        min_trades: int | None = None,
        result_constraint: str | None = None,
        fee_bps: float = DEFAULT_FEE_BPS,
        sim_config: SimConfig | None = None,
        timeframe: str | None = None,
        batch_target_s: float = DEFAULT_BATCH_TARGET_S,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
        settings: Settings | None = None,
        store: bool = True,
        progress: bool = True,
        study_name: str | None = None,
        cancel_event: threading.Event | None = None,
        executor: Executor = "ray",
        num_cpus: int | None = None,
    ) -> OptimizationResult:
        """Optimise a strategy's parameters over ``space``; return every trial and the best.

        Parameters
        ----------
        strategy
            A registered strategy name, a strategy class or instance.
        bars
            A pyarrow table (``load_ohlcv``), pandas DataFrame or mapping of OHLCV arrays.
        space
            ``{"fast": range(5, 55, 5), ...}`` or CLI entries ``["fast=5:50:5", ...]``.
        constraint
            Parameter constraint(s) such as ``"fast < slow"`` (safe expressions), or a predicate.
        objective, minimize
            A metric name (``"sharpe"``...) or a function of the metrics; direction.
        method, n_trials, seed
            ``"grid"``, ``"random"`` or ``"tpe"``; random and TPE need ``n_trials``.
        min_trades, result_constraint
            Trials whose metrics fail these are kept but marked rejected (never best).
        fee_bps, sim_config, timeframe
            Engine settings (``sim_config`` wins over ``fee_bps``, which defaults to Binance
            spot's taker fee, as ``co.backtest``'s); the timeframe sets annualisation (measured
            from the timestamps when omitted; required for bars without timestamps, and checked
            against their spacing when given).  Each trial is the ``co.backtest`` of its
            parameters with ``sim_config``, stops included (config, else the strategy's per-bar,
            else its class stops): the metrics are the same floats.
        batch_target_s, batch_size, max_in_flight
            Work per task (estimated from a small batch) or a fixed size; tasks in flight (2 per
            CPU).
        settings, store
            Where to record the run and its trials; ``store=False`` keeps nothing.
        progress, study_name, cancel_event
            Progress bar, display name, and an event that cancels the study when set.
        executor, num_cpus
            ``"ray"`` runs the batches as Ray tasks, ``"serial"`` runs the same batches in this
            process; ``num_cpus`` for a local Ray.

        Raises
        ------
        InvalidInputError
            Before any task starts, for an empty space, an unsatisfiable constraint, an unknown
            objective, method or executor, or values outside the strategy's declared ranges.
        """
        arrays = bars_to_arrays(bars, timeframe=timeframe)
        spec = build_study(
            self.strategy(strategy), arrays, space=space, constraint=constraint,
            objective=objective, minimize=minimize, method=method, n_trials=n_trials, seed=seed,
            min_trades=min_trades, result_constraint=result_constraint, fee_bps=fee_bps,
            sim_config=sim_config, timeframe=timeframe, name=study_name,
            batch_target_s=batch_target_s, batch_size=batch_size, max_in_flight=max_in_flight,
        )  # fmt: skip
        stored = (settings or get_settings()) if store else None
        return run_study(
            spec,
            self.executor(executor, stored or settings, num_cpus),
            settings=stored,
            progress=progress,
            cancel_event=cancel_event,
        )

    def open_study(
        self,
        strategy: Any,
        bars: Any,
        *,
        space: Mapping[str, Any] | Sequence[str],
        constraint: ConstraintSpec = None,
        objective: str = "sharpe",
        minimize: bool | None = None,
        method: str = "grid",
        n_trials: int | None = None,
        seed: int | None = None,
        min_trades: int | None = None,
        fee_bps: float = DEFAULT_FEE_BPS,
        timeframe: str | None = None,
        settings: Settings | None = None,
        study_name: str | None = None,
    ) -> str:
        """Validate a study and record its run without running it; return the run id.

        :meth:`optimize` called later with the same arguments finds the same study (same key)
        and runs it under this id, which lets the API answer with an id at once while the study
        runs as a Ray task.

        Raises
        ------
        InvalidInputError
            As :meth:`optimize` does, before anything is recorded.
        """
        arrays = bars_to_arrays(bars, timeframe=timeframe)
        spec = build_study(
            self.strategy(strategy), arrays, space=space, constraint=constraint,
            objective=objective, minimize=minimize, method=method, n_trials=n_trials, seed=seed,
            min_trades=min_trades, fee_bps=fee_bps, timeframe=timeframe, name=study_name,
        )  # fmt: skip
        run_id, _ = open_study_run(spec, settings or get_settings(), spec.key())
        return run_id

    def walk_forward(
        self,
        strategy: Any,
        bars: Any,
        *,
        space: Mapping[str, Any] | Sequence[str],
        n_folds: int = 4,
        train_frac: float = 0.7,
        mode: Mode = "rolling",
        constraint: ConstraintSpec = None,
        objective: str | ObjectiveFn = "sharpe",
        minimize: bool | None = None,
        method: str = "grid",
        n_trials: int | None = None,
        seed: int | None = None,
        min_trades: int | None = None,
        result_constraint: str | None = None,
        fee_bps: float = DEFAULT_FEE_BPS,
        sim_config: SimConfig | None = None,
        timeframe: str | None = None,
        batch_target_s: float = DEFAULT_BATCH_TARGET_S,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
        settings: Settings | None = None,
        store: bool = True,
        progress: bool = True,
        study_name: str | None = None,
        cancel_event: threading.Event | None = None,
        executor: Executor = "ray",
        num_cpus: int | None = None,
    ) -> WalkForwardResult:
        """Optimise on each train window and evaluate the best parameters on the next test window.

        Takes the arguments of :meth:`optimize` besides ``n_folds``, ``train_frac`` (share of
        the first fold used for training) and ``mode`` (``"rolling"`` or ``"anchored"``); they
        build the study spec that :func:`~.walkforward.walk_forward` runs once per fold.  The
        executor gets the bars once for all folds (Ray puts them in the object store).  A fold's
        out-of-sample result is ``co.backtest(strategy, bars[train_start:test_stop], params,
        config=sim_config, warmup=test_start - train_start)``: the same floats, stops included.
        """
        arrays = bars_to_arrays(bars, timeframe=timeframe)
        folds = split_folds(len(arrays), n_folds, train_frac=train_frac, mode=mode)
        spec = build_study(
            self.strategy(strategy), arrays, space=space, constraint=constraint,
            objective=objective, minimize=minimize, method=method, n_trials=n_trials, seed=seed,
            min_trades=min_trades, result_constraint=result_constraint, fee_bps=fee_bps,
            sim_config=sim_config, timeframe=timeframe, name=study_name,
            batch_target_s=batch_target_s, batch_size=batch_size, max_in_flight=max_in_flight,
        )  # fmt: skip
        stored = (settings or get_settings()) if store else None
        return walkforward.walk_forward(
            spec,
            folds,
            self.executor(executor, stored or settings, num_cpus, shared=arrays),
            settings=stored,
            progress=progress,
            cancel_event=cancel_event,
        )
