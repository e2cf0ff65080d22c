"""Distributed parameter optimization and walk-forward analysis on Ray.

A thin shell around :mod:`cryptoorchestrator.platform.optimize`: the bars go into the object store
once (``ray.put``), trials are grouped into batches worth about ``batch_target_s`` of work
(estimated on a small batch first) with neighbours in the space together, a bounded number of
batch tasks is kept in flight with ``ray.wait``, and every task calls the same
:func:`run_trials` a serial run calls, so the results are identical.  Finished trials are
stored as they arrive; re-running the same study skips them.

>>> import cryptoorchestrator as co
>>> space = {"fast": range(5, 55, 5), "slow": range(20, 210, 10)}
>>> opt = co.optimize("sma_cross", bars, space=space, constraint="fast < slow")
>>> opt.best, opt.results.to_pandas().head(), opt.plot()
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from cryptoorchestrator.cluster.optimize_task import batch_task
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.optimize import store as study_store
from cryptoorchestrator.platform.optimize.objective import (
    Objective,
    ObjectiveFn,
    parse_objective,
    parse_result_filter,
)
from cryptoorchestrator.platform.optimize.results import plot_results, ranked, results_table
from cryptoorchestrator.platform.optimize.sampling import (
    ConstraintSpec,
    ParamConstraint,
    TrialSource,
)
from cryptoorchestrator.platform.optimize.space import (
    Params,
    SearchSpace,
    canonical_json,
    parse_space,
    trial_key,
)
from cryptoorchestrator.platform.optimize.trials import (
    OK,
    BarArrays,
    TrialConfig,
    TrialResult,
    bars_to_arrays,
    best_of,
    data_fingerprint,
    declared_params,
    param_domain,
    plan_batches,
    run_trials,
    strategy_name,
    z_order,
)
from cryptoorchestrator.platform.optimize.walkforward import (
    Mode,
    evaluate_window,
    split_folds,
    stitch_equity,
)
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.strategy.base import Strategy

Executor = Literal["ray", "serial"]
_UPGRADED: set[str] = set()


# --------------------------------------------------------------------------------- results


@dataclass
class OptimizationResult:
    """The outcome of a study: every trial, the best one, a table and a plot."""

    # The key, or how to compute it: a study that is not stored needs it only if asked, and
    # hashing 1M bars took 50 ms of a core the workers were using.
    _study_key: str | Callable[[], str]
    run_id: str | None
    status: str
    strategy: Any
    objective: Objective
    param_names: tuple[str, ...]
    trials: list[TrialResult]
    config: TrialConfig
    n_reused: int = 0
    elapsed_s: float = 0.0
    batch_size: int = 0
    name: str = ""

    @property
    def study_key(self) -> str:
        """The study's identity (strategy, data, space, objective, settings): a re-run resumes."""
        if callable(self._study_key):
            self._study_key = self._study_key()
        return self._study_key

    @property
    def best_trial(self) -> TrialResult | None:
        """The succeeded trial with the best objective value (None if none succeeded)."""
        return best_of(self.trials, self.objective)

    @property
    def best(self) -> Params | None:
        """The best parameters."""
        t = self.best_trial
        return dict(t.params) if t else None

    @property
    def best_value(self) -> float | None:
        """The best objective value."""
        t = self.best_trial
        return t.value if t else None

    @property
    def results(self) -> pa.Table:
        """One row per trial (params, value, status, error, metrics); ``.to_pandas()`` works."""
        return results_table(self.trials, self.param_names)

    def top(self, n: int = 10) -> list[TrialResult]:
        """Return the ``n`` best succeeded trials, best first."""
        return ranked(self.trials, self.objective)[:n]

    def plot(self, path: str | Path | None = None) -> Path:
        """Save a heatmap (two parameters) or parallel coordinates plot as PNG; return its path."""
        path = Path(path) if path else Path(f"optimize-{self.study_key[:12]}.png")
        return plot_results(
            self.trials,
            self.param_names,
            self.objective,
            path,
            title=f"{self.name or strategy_name(self.strategy)}: {self.objective.name}",
        )


# ----------------------------------------------------------------------------- preparation


def _resolve_strategy(strategy: Any) -> Strategy:
    """Return the :class:`Strategy` a name, class or instance designates.

    Trials, windows and backtests share one evaluation contract, which needs a real
    ``Strategy`` (declared parameters, stops, the guard), so anything else is refused here.
    """
    from cryptoorchestrator.strategies.registry import get_strategy

    strat = get_strategy(strategy)
    if not isinstance(strat, Strategy):
        raise InvalidInputError(
            "strategy",
            f"{strategy!r} is not a Strategy",
            allowed="a strategy name, Strategy subclass or instance",
        )
    _ship_by_value(strat)
    return strat


def _ship_by_value(strategy: Any) -> None:
    """Pickle a strategy loaded from a user file by value when batches carry it to workers.

    The registry imports such files under module names no other process can import, so a batch
    worker that had not loaded the same ``strategy_paths`` could not unpickle the class.
    """
    from cryptoorchestrator.strategies.registry import USER_MODULE_PREFIX

    module = sys.modules.get(type(strategy).__module__)
    if module is not None and module.__name__.startswith(USER_MODULE_PREFIX):
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(module)


def _check_space(strategy: Any, space: SearchSpace) -> None:
    declared = declared_params(strategy)
    if not declared:
        return
    for dim in space.dimensions:
        field_ = f"space.{dim.name}"
        if dim.name not in declared:
            raise InvalidInputError(
                field_,
                f"strategy {strategy_name(strategy)!r} has no parameter {dim.name!r}",
                allowed=sorted(declared),
            )
        low, high, choices = param_domain(declared[dim.name])
        values = dim.values if dim.values is not None else (dim.low, dim.high)
        for v in values:
            if choices is not None and v not in choices:
                raise InvalidInputError(field_, f"{v!r} is not a declared choice", allowed=choices)
            if isinstance(v, int | float) and not isinstance(v, bool):
                if (low is not None and v < low) or (high is not None and v > high):
                    raise InvalidInputError(
                        field_,
                        f"{v!r} is outside the declared range",
                        allowed=f"{low} <= {dim.name} <= {high}",
                    )


def _periods_per_year(bars: BarArrays, timeframe: str | None) -> float:
    # The same rule as co.backtest: the timeframe (checked against the spacing) or the spacing
    # of ms-dated bars; with neither, InvalidInputError naming timeframe.
    from cryptoorchestrator.platform.model.timestamps import annualisation

    return annualisation(bars.timestamp, timeframe)


@dataclass
class _Study:
    strategy: Any
    space: SearchSpace
    constraint: ParamConstraint
    objective: Objective
    method: str
    n_trials: int | None
    seed: int | None
    config: TrialConfig
    settings: Settings | None
    name: str
    extra_key: dict[str, Any] = field(default_factory=dict)

    def key(self, bars: BarArrays) -> str:
        doc = {
            "strategy": strategy_name(self.strategy),
            "data": data_fingerprint(bars),
            "space": self.space.to_json(),
            "constraint": self.constraint.to_json(),
            "objective": self.objective.to_json(),
            "method": self.method,
            "seed": self.seed,
            "config": self.config_json(),
            **self.extra_key,
        }
        if self.method == "grid":
            doc["n_trials"] = self.n_trials
        return hashlib.sha256(canonical_json(doc).encode()).hexdigest()

    def config_json(self) -> dict[str, Any]:
        sim = {
            k: getattr(self.config.sim, k)
            for k in self.config.sim.__dataclass_fields__
            if not k.startswith("_")
        }
        return {
            "sim": sim,
            "periods_per_year": self.config.periods_per_year,
            "result_filter": self.config.result_filter.to_json(),
        }


def _prepare(
    strategy: Any,
    *,
    space: Any,
    constraint: ConstraintSpec,
    objective: Any,
    minimize: bool | None,
    method: str,
    n_trials: int | None,
    seed: int | None,
    min_trades: int | None,
    result_constraint: str | None,
    fee_bps: float,
    sim_config: SimConfig | None,
    periods_per_year: float,
    settings: Settings | None,
    store: bool,
    study_name: str | None,
) -> _Study:
    strat = _resolve_strategy(strategy)
    parsed = parse_space(space)
    _check_space(strat, parsed)
    cons = ParamConstraint(constraint, parsed.names)
    obj = parse_objective(objective, minimize=minimize)
    sim = sim_config if sim_config is not None else SimConfig(fee_bps=fee_bps)
    cfg = TrialConfig(
        sim, periods_per_year, obj, parse_result_filter(min_trades, result_constraint)
    )
    # Builds the first proposals now, so an unsatisfiable constraint fails before any task.
    TrialSource(
        parsed, cons, method, n_trials=n_trials, seed=seed, maximize=obj.direction == "maximize"
    )
    st = (settings or get_settings()) if store else None
    return _Study(
        strat,
        parsed,
        cons,
        obj,
        method,
        n_trials,
        seed,
        cfg,
        st,
        study_name or strategy_name(strat),
    )


# ------------------------------------------------------------------------------- Ray parts


_REMOTE: dict[str, Any] = {}


def _remote_batch() -> Any:
    fn = _REMOTE.get("batch")
    if fn is None:
        import ray

        fn = ray.remote(num_cpus=1, max_retries=0)(batch_task)
        _REMOTE["batch"] = fn
    return fn


class _Background:
    """Call ``fn`` in a daemon thread; :meth:`result` waits and returns (or raises) its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._out: Any = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._out = self._fn()
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._exc = exc

    def result(self) -> Any:
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out


def _readonly(bars: BarArrays) -> BarArrays:
    views = []
    for a in bars:
        v = a.view()
        v.flags.writeable = False
        views.append(v)
    return BarArrays(*views)


#: Work per batch task.  Measured on the 174-trial SMA grid over 1M bars (2 CPUs): batches of
#: 0.1 s ran 15-25 % slower than 0.5 s ones, from less indicator reuse and more tasks; trials
#: of one study cost about the same, so equal batches (a multiple of the CPU count) still end
#: together.
DEFAULT_BATCH_TARGET_S = 0.5
#: Bars and trials of the sizing measurement: enough to time a batch, small next to a study.
_MEASURE_BARS = 100_000
_MEASURE_TRIALS = 8
_MEASURE_RUNS = 2
#: Trials planned into batches at once when proposals do not depend on results (grid, random).
_POOL = 4096


def _measure_batch(study: _Study, bars: BarArrays, sample: Sequence[Params]) -> float:
    """Return the estimated seconds per trial on ``bars``, timing a small batch on a slice.

    The batch goes through :func:`run_trials` as a task's would (indicator reuse included), on
    read-only arrays, which also compiles numba's read-only specialisation in this process; the
    time is scaled by the bar count (the engine and the indicators are linear in bars).  A
    single cold trial on the full data, as before, mistook page faults for work by 2-3x.
    """
    ro = _readonly(bars)
    n = len(ro)
    run_trials(list(sample[:1]), ro.window(0, min(n, 2_000)), study.strategy, study.config)
    m = min(n, _MEASURE_BARS)
    window = ro.window(0, m)
    # This thread's CPU time, not the wall clock: the put and the hash run beside it, and a
    # busy machine made the wall-clock estimate (so the batch count) vary 3-fold run to run.
    # The better of two runs: the first one in a process also pays for fresh memory pages.
    elapsed = math.inf
    for _ in range(_MEASURE_RUNS):
        t0 = time.thread_time()
        run_trials(list(sample), window, study.strategy, study.config)
        elapsed = min(elapsed, time.thread_time() - t0)
    return max(elapsed / max(len(sample), 1) * n / m, 1e-6)


def _n_batches(trial_s: float, n_total: int, n_cpus: int, target_s: float) -> int:
    """Return how many batches to cut ``n_total`` trials into (each about ``target_s`` long)."""
    n = math.ceil(n_total * trial_s / target_s)
    # At least one batch per CPU (no idle worker, and every worker is warmed), and a multiple
    # of the CPU count with equal batches, so no worker idles on the last round.
    n = max(n, min(n_cpus, n_total))
    if n > 1 and n_cpus > 1:
        n = math.ceil(n / n_cpus) * n_cpus
    return max(1, min(n, n_total))


#: The last round's batches are halved until a piece holds at most this many trials.
TAIL_MIN_PIECE = 6


def _split_tail(batches: list[list[Params]], n_cpus: int) -> list[list[Params]]:
    """Cut the last round of batches (one per CPU) into halving pieces, neighbours together.

    Equal batches do not cost the same (an SMA cross with a short fast period trades far more
    often: the first batch of the 174-trial grid runs 1.4x as long as the last), and a worker's
    first batch also pays for its fresh memory, so the workers reach the last round apart by up
    to a fraction of a batch.  Each batch of that round becomes pieces of a half, a quarter, an
    eighth... down to ``TAIL_MIN_PIECE`` trials, sent largest first (one of each CPU's at each
    size): the worker that gets there first takes more of the rest, and the two finish at most
    a small piece apart.  Two workers finished 0.1 s apart on a 0.8 s study with halves, ~40 ms
    with quarters; halving pieces took another ~20 ms off the study.  One CPU has nobody to
    wait for: its plan is left alone.
    """
    if n_cpus < 2 or len(batches) < n_cpus:
        return batches
    head, tail = batches[:-n_cpus], batches[-n_cpus:]
    cuts: list[list[list[Params]]] = []
    for batch in tail:
        parts: list[list[Params]] = []
        rest = list(batch)
        while len(rest) > TAIL_MIN_PIECE:
            half = math.ceil(len(rest) / 2)
            parts.append(rest[:half])
            rest = rest[half:]
        if rest:
            parts.append(rest)
        cuts.append(parts)
    out = list(head)
    for level in range(max(len(parts) for parts in cuts)):
        out.extend(parts[level] for parts in cuts if level < len(parts))
    return out


def _probes(new: list[Params], n_cpus: int) -> tuple[list[list[Params]], list[Params]] | None:
    """Return a first batch per CPU to time the study by, and the trials left; None if small.

    Each probe is a compact block of the space (Z-order) from another part of it, so their
    average cost stands for the study's: short fast periods of an SMA cross trade far more
    often than long ones.
    """
    n_probe = _MEASURE_TRIALS
    if len(new) < 4 * n_probe * n_cpus:
        return None
    ordered = z_order(new)
    stride = len(ordered) // n_cpus
    starts = [k * stride for k in range(n_cpus)]
    picked = {i for s in starts for i in range(s, s + n_probe)}
    probes = [ordered[s : s + n_probe] for s in starts]
    rest = [p for i, p in enumerate(ordered) if i not in picked]
    return probes, rest


def _probe_trial_s(results: Sequence[TrialResult]) -> float:
    """Return the seconds per trial a finished probe took (its indicators included)."""
    timed = [r.duration_s for r in results if r.duration_s > 0]
    return max(sum(timed) / len(timed), 1e-6) if timed else 1e-6


def _batch_size(trial_s: float, n_total: int, n_cpus: int, target_s: float) -> int:
    """Return the number of trials per batch (see :func:`_n_batches`)."""
    return max(1, math.ceil(n_total / _n_batches(trial_s, n_total, n_cpus, target_s)))


class _Progress:
    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._p: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task(label, total=total, best="-")

    def update(self, done: int, best: float | None) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=done, best="-" if best is None else f"{best:.4g}")

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def _open_run(study: _Study, key: str) -> tuple[str, dict[str, TrialResult]]:
    """Record (or find) the study's run, migrating its database once per process."""
    settings = study.settings
    assert settings is not None
    if settings.database_url not in _UPGRADED:
        from cryptoorchestrator.platform.storage.db import upgrade

        upgrade(settings)
        _UPGRADED.add(settings.database_url)
    return study_store.open_run(
        settings,
        study_key=key,
        strategy=strategy_name(study.strategy),
        method=study.method,
        objective=study.objective.name,
        space=study.space.to_json(),
        config={
            **study.config_json(),
            "constraint": study.constraint.to_json(),
            "seed": study.seed,
            "n_trials": study.n_trials,
            "name": study.name,
            "direction": study.objective.direction,
        },
    )


def _run_study(
    study: _Study,
    bars: BarArrays,
    *,
    executor: Executor,
    bars_ref: Any = None,
    window: tuple[int, int] | None = None,
    batch_target_s: float,
    batch_size: int | None,
    max_in_flight: int | None,
    progress: bool,
    cancel_event: threading.Event | None,
) -> OptimizationResult:
    t_start = time.perf_counter()
    arrays = bars.window(*window) if window is not None else bars
    n_cpus = 1
    ray: Any = None
    if executor == "ray":
        import ray as ray_module

        ray = ray_module
        # The cluster's CPUs, not those free this instant: a worker of the previous study may
        # still hold its lease, and planning for one CPU left the other idle a third of the run.
        n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # The driver's work before the first task runs on the cores the workers are about to use:
    # hashing (the study key) and ray.put release the GIL, so both run in threads while this
    # one opens the run.  Without a store the key is only reported: it is computed if asked.
    hasher = _Background(lambda: study.key(arrays)) if study.settings is not None else None
    putter = _Background(lambda: ray.put(bars)) if ray is not None and bars_ref is None else None
    source = TrialSource(
        study.space,
        study.constraint,
        study.method,
        n_trials=study.n_trials,
        seed=study.seed,
        maximize=study.objective.direction == "maximize",
    )
    run_id: str | None = None
    done: dict[str, TrialResult] = {}
    settings = study.settings
    if settings is not None:
        assert hasher is not None
        run_id, done = _open_run(study, hasher.result())
    total = source.n_trials
    results: dict[str, TrialResult] = {}
    order: list[str] = []
    n_reused = 0
    best: float | None = None
    size = batch_size
    in_flight: dict[Any, list[Params]] = {}
    limit = max_in_flight or 2 * n_cpus
    status = study_store.SUCCEEDED
    bar = _Progress(progress, total, f"{study.name} [{study.method}]")
    batch_no = 0
    last_cancel_check = time.monotonic()

    def absorb(batch_results: Sequence[TrialResult]) -> None:
        nonlocal best
        for r in batch_results:
            results[r.trial_key] = r
            source.tell(r.params, r.value if r.status == OK else None)
            if r.status == OK and r.value is not None and study.objective.is_better(r.value, best):
                best = r.value
        if settings is not None and run_id is not None:
            fresh = [r for r in batch_results if not r.reused]
            study_store.record_trials(
                settings, run_id, fresh, progress=len(results) / max(total, 1)
            )
        bar.update(len(results), best)

    def cancelled() -> bool:
        nonlocal last_cancel_check
        if cancel_event is not None and cancel_event.is_set():
            return True
        if (
            settings is not None
            and run_id is not None
            and time.monotonic() - last_cancel_check > 1.0
        ):
            last_cancel_check = time.monotonic()
            return study_store.cancel_requested(settings, run_id)
        return False

    queue: deque[list[Params]] = deque()
    # Grid and random proposals do not depend on results: plan many trials into batches at
    # once (neighbours together, for indicator reuse).  TPE asks one batch at a time.
    independent = study.method in ("grid", "random")

    # Trials planned once the probes have timed a batch (see plan_next).
    held_back: list[Params] = []

    def plan_independent(new: list[Params]) -> list[list[Params]]:
        assert size is not None
        n_batches = math.ceil(len(new) / size)
        if n_batches > 1 and n_cpus > 1:
            n_batches = math.ceil(n_batches / n_cpus) * n_cpus
        batches = plan_batches(new, n_batches)
        return _split_tail(batches, n_cpus) if source.exhausted else batches

    def plan_next() -> list[list[Params]]:
        nonlocal size, n_reused, held_back
        if held_back:
            if size is None:
                return []  # the probes are still running
            new, held_back = held_back, []
            return plan_independent(new)
        want = _POOL if independent else (size or _MEASURE_TRIALS)
        proposals = source.ask(want)
        if not proposals:
            return []
        before = len(results)
        new = _split_known(proposals, done, order, results, absorb)
        n_reused += len(results) - before
        if not new:
            return []
        if size is None:
            probes = _probes(new, n_cpus) if ray is not None and independent else None
            if probes is not None:
                # The workers time the first batches themselves, while the driver waits:
                # timing a batch here held both cores' work back by 60-80 ms.
                held_back = probes[1]
                return probes[0]
            trial_s = _measure_batch(study, arrays, new[:_MEASURE_TRIALS])
            size = _batch_size(trial_s, total - n_reused, n_cpus, batch_target_s)
        if not independent:
            if len(new) <= size:
                return [new]
            return [new[i : i + size] for i in range(0, len(new), size)]
        return plan_independent(new)

    try:
        while True:
            if cancelled():
                status = study_store.CANCELLED
                break
            while len(in_flight) < limit and (queue or held_back or not source.exhausted):
                if executor == "serial" and cancelled():
                    status = study_store.CANCELLED
                    break
                if not queue:
                    queue.extend(plan_next())
                    if not queue:
                        if source.exhausted or held_back:
                            break
                        continue
                new = queue.popleft()
                if executor == "serial":
                    absorb(run_trials(new, arrays, study.strategy, study.config))
                    continue
                if putter is not None:
                    bars_ref, putter = putter.result(), None
                ref = (
                    _remote_batch()
                    .options(name=f"optimize:{study.name}:batch{batch_no}")
                    .remote(bars_ref, window, study.strategy, new, study.config)
                )
                batch_no += 1
                in_flight[ref] = new
            if not in_flight or status == study_store.CANCELLED:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                batch = in_flight.pop(ref)
                try:
                    got = ray.get(ref)
                    absorb(got)
                    if size is None and held_back:
                        size = _batch_size(
                            _probe_trial_s(got), len(held_back), n_cpus, batch_target_s
                        )
                except Exception as exc:  # the worker died: these trials failed, go on
                    if size is None and held_back:
                        trial_s = _measure_batch(study, arrays, held_back[:_MEASURE_TRIALS])
                        size = _batch_size(trial_s, len(held_back), n_cpus, batch_target_s)
                    err = f"{type(exc).__name__}: {exc}"[:4000]
                    absorb(
                        [
                            TrialResult(trial_key(p), dict(p), None, None, "failed", err)
                            for p in batch
                        ]
                    )
    except KeyboardInterrupt:
        status = study_store.CANCELLED
        _cancel(ray, in_flight)
        _finish(study, run_id, status, results, order)
        bar.close()
        raise
    except BaseException as exc:
        _cancel(ray, in_flight)
        _finish(
            study,
            run_id,
            study_store.FAILED_RUN,
            results,
            order,
            error=f"{type(exc).__name__}: {exc}",
        )
        bar.close()
        raise
    if status == study_store.CANCELLED:
        _cancel(ray, in_flight)
    bar.close()
    trials = [results[k] for k in order if k in results]
    _finish(study, run_id, status, results, order)
    if putter is not None:  # no task was started: still surface a failed put
        putter.result()
    return OptimizationResult(
        hasher.result() if hasher is not None else functools.partial(study.key, arrays),
        run_id,
        status,
        study.strategy,
        study.objective,
        study.space.names,
        trials,
        study.config,
        n_reused,
        time.perf_counter() - t_start,
        size or 0,
        study.name,
    )


def _split_known(
    proposals: Sequence[Params],
    done: Mapping[str, TrialResult],
    order: list[str],
    results: Mapping[str, TrialResult],
    absorb: Callable[[Sequence[TrialResult]], None],
) -> list[Params]:
    """Note the order of ``proposals``; absorb those a previous run finished; return the rest."""
    new: list[Params] = []
    reused: list[TrialResult] = []
    for p in proposals:
        k = trial_key(p)
        if k in results:
            continue
        order.append(k)
        if k in done:
            reused.append(done[k])
        else:
            new.append(p)
    if reused:
        absorb(reused)
    return new


def _cancel(ray: Any, in_flight: Mapping[Any, Any]) -> None:
    if ray is None:
        return
    for ref in in_flight:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: S112  (already finished or gone: nothing to cancel)
            continue


def _finish(
    study: _Study,
    run_id: str | None,
    status: str,
    results: Mapping[str, TrialResult],
    order: Sequence[str],
    error: str | None = None,
) -> None:
    if study.settings is None or run_id is None:
        return
    trials = [results[k] for k in order if k in results]
    b = best_of(trials, study.objective)
    study_store.finish_run(
        study.settings,
        run_id,
        status=status,
        n_trials=len(trials),
        best_params=b.params if b else None,
        best_value=b.value if b else None,
        error=error,
    )


# ------------------------------------------------------------------------------ public API


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
    study = _prepare(
        strategy,
        space=space,
        constraint=constraint,
        objective=objective,
        minimize=minimize,
        method=method,
        n_trials=n_trials,
        seed=seed,
        min_trades=min_trades,
        result_constraint=result_constraint,
        fee_bps=fee_bps,
        sim_config=sim_config,
        periods_per_year=_periods_per_year(arrays, timeframe),
        settings=settings,
        store=store,
        study_name=study_name,
    )
    if executor == "ray":
        from cryptoorchestrator.cluster.runtime import ensure_ray

        ensure_ray(study.settings or settings, num_cpus=num_cpus)
    elif executor != "serial":
        raise InvalidInputError(
            "executor", f"unknown executor {executor!r}", allowed=("ray", "serial")
        )
    return _run_study(
        study,
        arrays,
        executor=executor,
        batch_target_s=batch_target_s,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
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
    study = _prepare(
        strategy,
        space=space,
        constraint=constraint,
        objective=objective,
        minimize=minimize,
        method=method,
        n_trials=n_trials,
        seed=seed,
        min_trades=min_trades,
        result_constraint=None,
        fee_bps=fee_bps,
        sim_config=None,
        periods_per_year=_periods_per_year(arrays, timeframe),
        settings=settings,
        store=True,
        study_name=study_name,
    )
    run_id, _ = _open_run(study, study.key(arrays))
    return run_id


@dataclass
class WalkForwardResult:
    """Per-fold best parameters with in-sample and out-of-sample metrics, stitched OOS equity."""

    folds: list[dict[str, Any]]
    equity: np.ndarray
    timestamps: np.ndarray
    studies: list[OptimizationResult]

    @property
    def table(self) -> pa.Table:
        """One row per fold: windows, best params, ``is_<metric>`` and ``oos_<metric>``."""
        rows = []
        for f in self.folds:
            row = {k: v for k, v in f.items() if k not in ("is_metrics", "oos_metrics", "params")}
            row.update({f"param_{k}": v for k, v in (f["params"] or {}).items()})
            row.update({f"is_{k}": v for k, v in (f["is_metrics"] or {}).items()})
            row.update({f"oos_{k}": v for k, v in (f["oos_metrics"] or {}).items()})
            rows.append(row)
        return pa.Table.from_pylist(rows)

    @property
    def oos_return(self) -> float:
        """Total return of the stitched out-of-sample equity curve."""
        if not self.equity.size or not self.studies:
            return math.nan
        return float(self.equity[-1] / self.studies[0].config.sim.init_cash - 1.0)


def walk_forward(
    strategy: Any,
    bars: Any,
    *,
    space: Mapping[str, Any] | Sequence[str],
    n_folds: int = 4,
    train_frac: float = 0.7,
    mode: Mode = "rolling",
    executor: Executor = "ray",
    **kwargs: Any,
) -> WalkForwardResult:
    """Optimise on each train window and evaluate the best parameters on the next test window.

    Takes the arguments of :func:`optimize` besides ``n_folds``, ``train_frac`` (share of the
    first fold used for training) and ``mode`` (``"rolling"`` or ``"anchored"``).  The bars are
    put in the object store once for all folds.  A fold's out-of-sample result is
    ``co.backtest(strategy, bars[train_start:test_stop], params, config=sim_config,
    warmup=test_start - train_start)``: the same floats, stops included.
    """
    arrays = bars_to_arrays(bars, timeframe=kwargs.get("timeframe"))
    folds = split_folds(len(arrays), n_folds, train_frac=train_frac, mode=mode)
    opt_keys = {
        "constraint",
        "objective",
        "minimize",
        "method",
        "n_trials",
        "seed",
        "min_trades",
        "result_constraint",
        "fee_bps",
        "sim_config",
        "settings",
        "store",
        "study_name",
    }
    run_keys = {"batch_target_s", "batch_size", "max_in_flight", "progress", "cancel_event"}
    unknown = set(kwargs) - opt_keys - run_keys - {"timeframe", "num_cpus"}
    if unknown:
        raise TypeError(f"walk_forward() got unexpected arguments {sorted(unknown)}")
    study = _prepare(
        strategy,
        space=space,
        constraint=kwargs.get("constraint"),
        objective=kwargs.get("objective", "sharpe"),
        minimize=kwargs.get("minimize"),
        method=kwargs.get("method", "grid"),
        n_trials=kwargs.get("n_trials"),
        seed=kwargs.get("seed"),
        min_trades=kwargs.get("min_trades"),
        result_constraint=kwargs.get("result_constraint"),
        fee_bps=kwargs.get("fee_bps", DEFAULT_FEE_BPS),
        sim_config=kwargs.get("sim_config"),
        periods_per_year=_periods_per_year(arrays, kwargs.get("timeframe")),
        settings=kwargs.get("settings"),
        store=kwargs.get("store", True),
        study_name=kwargs.get("study_name"),
    )
    bars_ref = None
    if executor == "ray":
        from cryptoorchestrator.cluster.runtime import ensure_ray

        ray = ensure_ray(study.settings or kwargs.get("settings"), num_cpus=kwargs.get("num_cpus"))
        bars_ref = ray.put(arrays)
    base_name = study.name
    out: list[dict[str, Any]] = []
    studies: list[OptimizationResult] = []
    curves: list[np.ndarray] = []
    for fold in folds:
        study.name = f"{base_name}:fold{fold.index}"
        study.extra_key = {"fold": [fold.train_start, fold.train_stop]}
        res = _run_study(
            study,
            arrays,
            executor=executor,
            bars_ref=bars_ref,
            window=(fold.train_start, fold.train_stop),
            batch_target_s=kwargs.get("batch_target_s", DEFAULT_BATCH_TARGET_S),
            batch_size=kwargs.get("batch_size"),
            max_in_flight=kwargs.get("max_in_flight"),
            progress=kwargs.get("progress", True),
            cancel_event=kwargs.get("cancel_event"),
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
                study.strategy,
                arrays,
                bt.params,
                study.config,
                fold.test_start,
                fold.test_stop,
                warmup_start=fold.train_start,
            )
            row["oos_metrics"] = win.metrics
            row["oos_value"] = study.objective.value(win.metrics)
            curves.append(win.equity)
        else:  # nothing tradable in this fold: stay in cash out of sample
            curves.append(np.full(fold.test_stop - fold.test_start, study.config.sim.init_cash))
        out.append(row)
        if res.status != study_store.SUCCEEDED:
            break
    equity = stitch_equity(curves, study.config.sim.init_cash)
    ts = arrays.timestamp[folds[0].test_start : folds[0].test_start + equity.size]
    return WalkForwardResult(out, equity, ts, studies)
