"""Distributed parameter optimization and walk-forward analysis on Ray.

A thin shell around :mod:`cryptoorchestrator.platform.optimize`, which validates the study
(:func:`~cryptoorchestrator.platform.optimize.study.build_study`), plans its batches and drives
them (:func:`~cryptoorchestrator.platform.optimize.executor.run_study`).  Here the bars go into
the object store once (``ray.put``), each batch becomes a task calling the same
:func:`run_trials` a serial run calls (so the results are identical), and a bounded number of
tasks is kept in flight with ``ray.wait``.

>>> import cryptoorchestrator as co
>>> space = {"fast": range(5, 55, 5), "slow": range(20, 210, 10)}
>>> opt = co.optimize("sma_cross", bars, space=space, constraint="fast < slow")
>>> opt.best, opt.results.to_pandas().head(), opt.plot()
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cryptoorchestrator.cluster.optimize_task import batch_task
from cryptoorchestrator.cluster.runtime import ensure_ray
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.optimize import walkforward
from cryptoorchestrator.platform.optimize.executor import (
    Background,
    BatchExecutor,
    FinishedBatch,
    SerialExecutor,
    run_study,
)
from cryptoorchestrator.platform.optimize.objective import ObjectiveFn
from cryptoorchestrator.platform.optimize.results import OptimizationResult, WalkForwardResult
from cryptoorchestrator.platform.optimize.sampling import ConstraintSpec
from cryptoorchestrator.platform.optimize.space import Params
from cryptoorchestrator.platform.optimize.study import (
    DEFAULT_BATCH_TARGET_S,
    StudySpec,
    build_study,
    open_study_run,
)
from cryptoorchestrator.platform.optimize.trials import BarArrays, bars_to_arrays
from cryptoorchestrator.platform.optimize.walkforward import Mode, split_folds
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.strategy.base import Strategy
from cryptoorchestrator.strategies.registry import USER_MODULE_PREFIX, get_strategy

Executor = Literal["ray", "serial"]
_REMOTE: dict[str, Any] = {}


def _remote_batch() -> Any:
    fn = _REMOTE.get("batch")
    if fn is None:
        import ray

        fn = ray.remote(num_cpus=1, max_retries=0)(batch_task)
        _REMOTE["batch"] = fn
    return fn


class RayExecutor:
    """Run a study's batches as Ray tasks on bars in the object store, a bounded number at once.

    One executor serves the studies of one set of bars (the folds of a walk-forward), one study
    at a time.

    Parameters
    ----------
    bars_ref
        The study's bars already in the object store (walk-forward puts them once for all its
        folds); None puts them when the first study starts.
    """

    probe_on_workers = True

    def __init__(self, bars_ref: Any = None) -> None:
        import ray

        self._ray: Any = ray
        self._bars_ref = bars_ref
        self._putter: Background[Any] | None = None
        self._spec: StudySpec | None = None
        self._in_flight: dict[Any, list[Params]] = {}
        self._limit = 1
        self._batch_no = 0

    def start(self, spec: StudySpec) -> int:
        """Start putting the bars in the object store; return the cluster's CPU count."""
        self._spec, self._in_flight, self._batch_no = spec, {}, 0
        # The cluster's CPUs, not those free this instant: a worker of the previous study may
        # still hold its lease, and planning for one CPU left the other idle for much of the run.
        n_cpus = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        self._limit = spec.max_in_flight or 2 * n_cpus
        if self._bars_ref is None and self._putter is None:
            # ray.put releases the GIL: it runs while the driver hashes and opens the run.
            bars = spec.bars
            self._putter = Background(lambda: self._ray.put(bars))
        return n_cpus

    def has_room(self) -> bool:
        """Return whether fewer tasks than the limit (``max_in_flight``, 2 per CPU) run."""
        return len(self._in_flight) < self._limit

    def idle(self) -> bool:
        """Return whether no task is left to wait for."""
        return not self._in_flight

    def submit(self, batch: list[Params]) -> None:
        """Start a task running ``batch``."""
        spec = self._spec
        assert spec is not None, "start() first"
        if self._putter is not None:
            self._bars_ref, self._putter = self._putter.result(), None
        ref = (
            _remote_batch()
            .options(name=f"optimize:{spec.name}:batch{self._batch_no}")
            .remote(self._bars_ref, spec.window, spec.strategy, batch, spec.config)
        )
        self._batch_no += 1
        self._in_flight[ref] = batch

    def wait(self, timeout: float) -> list[FinishedBatch]:
        """Return the task that finished within ``timeout`` seconds, if any."""
        ready, _ = self._ray.wait(list(self._in_flight), num_returns=1, timeout=timeout)
        out: list[FinishedBatch] = []
        for ref in ready:
            batch = self._in_flight.pop(ref)
            try:
                out.append(FinishedBatch(batch, self._ray.get(ref)))
            except Exception as exc:  # the worker died: the driver marks these trials failed
                out.append(FinishedBatch(batch, None, exc))
        return out

    def cancel(self) -> None:
        """Cancel the tasks in flight."""
        for ref in self._in_flight:
            try:
                self._ray.cancel(ref)
            except Exception:  # noqa: S112  (already finished or gone: nothing to cancel)
                continue

    def finish(self) -> None:
        """Raise a failed put that no task surfaced (every trial was reused)."""
        putter, self._putter = self._putter, None
        if putter is not None:
            putter.result()


def _resolve_strategy(strategy: Any) -> Strategy:
    """Return the :class:`Strategy` a name, class or instance designates.

    Trials, windows and backtests share one evaluation contract, which needs a real
    ``Strategy`` (declared parameters, stops, the guard), so anything else is refused here.
    A strategy loaded from a user file is pickled by value: the registry imports such files
    under module names a batch worker that had not loaded the same ``strategy_paths`` could
    not import.
    """
    strat = get_strategy(strategy)
    if not isinstance(strat, Strategy):
        raise InvalidInputError(
            "strategy",
            f"{strategy!r} is not a Strategy",
            allowed="a strategy name, Strategy subclass or instance",
        )
    module = sys.modules.get(type(strat).__module__)
    if module is not None and module.__name__.startswith(USER_MODULE_PREFIX):
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    return strat


def _executor(
    name: Executor, settings: Settings | None, num_cpus: int | None, put: BarArrays | None = None
) -> BatchExecutor:
    """Return the executor called ``name``, connecting to Ray (and putting ``put``) for "ray"."""
    if name == "serial":
        return SerialExecutor()
    if name != "ray":
        raise InvalidInputError("executor", f"unknown executor {name!r}", allowed=("ray", "serial"))
    ray = ensure_ray(settings, num_cpus=num_cpus)
    return RayExecutor(ray.put(put) if put is not None else None)


def optimize(
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
    """Optimise a strategy's parameters over ``space`` on Ray; return every trial and the best.

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
        Engine settings (``sim_config`` wins over ``fee_bps``, which defaults to Binance spot's
        taker fee, as ``co.backtest``'s); the timeframe sets annualisation (measured from the
        timestamps when omitted; required for bars without timestamps, and checked against
        their spacing when given).  Each trial is the ``co.backtest`` of its parameters with
        ``sim_config``, stops included (config, else the strategy's per-bar, else its class
        stops): the metrics are the same floats.
    batch_target_s, batch_size, max_in_flight
        Work per task (estimated from a small batch) or a fixed size; tasks in flight (2 per
        CPU).
    settings, store
        Where to record the run and its trials; ``store=False`` keeps nothing.
    progress, study_name, cancel_event
        Progress bar, display name, and an event that cancels the study when set.
    executor, num_cpus
        ``"serial"`` runs the same batches in this process; ``num_cpus`` for a local Ray.

    Raises
    ------
    InvalidInputError
        Before any task starts, for an empty space, an unsatisfiable constraint, an unknown
        objective or method, or values outside the strategy's declared ranges.
    """
    arrays = bars_to_arrays(bars, timeframe=timeframe)
    spec = build_study(
        _resolve_strategy(strategy), arrays, space=space, constraint=constraint,
        objective=objective, minimize=minimize, method=method, n_trials=n_trials, seed=seed,
        min_trades=min_trades, result_constraint=result_constraint, fee_bps=fee_bps,
        sim_config=sim_config, timeframe=timeframe, name=study_name,
        batch_target_s=batch_target_s, batch_size=batch_size, max_in_flight=max_in_flight,
    )  # fmt: skip
    stored = (settings or get_settings()) if store else None
    return run_study(
        spec,
        _executor(executor, stored or settings, num_cpus),
        settings=stored,
        progress=progress,
        cancel_event=cancel_event,
    )


def open_study(
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

    :func:`optimize` called later with the same arguments finds the same study (same key) and
    runs it under this id, which lets the API answer with an id at once while the study runs as
    a Ray task.

    Raises
    ------
    InvalidInputError
        As :func:`optimize` does, before anything is recorded.
    """
    arrays = bars_to_arrays(bars, timeframe=timeframe)
    spec = build_study(
        _resolve_strategy(strategy), arrays, space=space, constraint=constraint,
        objective=objective, minimize=minimize, method=method, n_trials=n_trials, seed=seed,
        min_trades=min_trades, fee_bps=fee_bps, timeframe=timeframe, name=study_name,
    )  # fmt: skip
    run_id, _ = open_study_run(spec, settings or get_settings(), spec.key())
    return run_id


def walk_forward(
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

    Takes the arguments of :func:`optimize` besides ``n_folds``, ``train_frac`` (share of the
    first fold used for training) and ``mode`` (``"rolling"`` or ``"anchored"``); they build the
    study spec that :func:`~cryptoorchestrator.platform.optimize.walkforward.walk_forward`
    runs once per fold.  The bars are put in the object store once for all folds.  A fold's
    out-of-sample result is ``co.backtest(strategy, bars[train_start:test_stop], params,
    config=sim_config, warmup=test_start - train_start)``: the same floats, stops included.
    """
    arrays = bars_to_arrays(bars, timeframe=timeframe)
    folds = split_folds(len(arrays), n_folds, train_frac=train_frac, mode=mode)
    spec = build_study(
        _resolve_strategy(strategy), arrays, space=space, constraint=constraint,
        objective=objective, minimize=minimize, method=method, n_trials=n_trials, seed=seed,
        min_trades=min_trades, result_constraint=result_constraint, fee_bps=fee_bps,
        sim_config=sim_config, timeframe=timeframe, name=study_name,
        batch_target_s=batch_target_s, batch_size=batch_size, max_in_flight=max_in_flight,
    )  # fmt: skip
    stored = (settings or get_settings()) if store else None
    return walkforward.walk_forward(
        spec,
        folds,
        _executor(executor, stored or settings, num_cpus, put=arrays),
        settings=stored,
        progress=progress,
        cancel_event=cancel_event,
    )
