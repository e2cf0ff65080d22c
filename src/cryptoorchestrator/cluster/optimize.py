"""Distributed parameter optimization and walk-forward analysis on Ray.

A thin shell around :mod:`cryptoorchestrator.platform.optimize`, whose ``Optimizer`` validates
the study, plans its batches and drives them.  Here the bars go into the object store once
(``ray.put``), each batch becomes a task calling the same :func:`run_trials` a serial run calls
(so the results are identical), and a bounded number of tasks is kept in flight with
``ray.wait``.

>>> import cryptoorchestrator as co
>>> space = {"fast": range(5, 55, 5), "slow": range(20, 210, 10)}
>>> opt = co.optimize("sma_cross", bars, space=space, constraint="fast < slow")
>>> opt.best, opt.results.to_pandas().head(), opt.plot()
"""

from __future__ import annotations

import sys
from typing import Any

from cryptoorchestrator.cluster.optimize_task import batch_task
from cryptoorchestrator.cluster.runtime import ensure_ray
from cryptoorchestrator.platform.optimize.executor import Background, FinishedBatch
from cryptoorchestrator.platform.optimize.optimizer import Executor, Optimizer
from cryptoorchestrator.platform.optimize.space import Params
from cryptoorchestrator.platform.optimize.study import StudySpec
from cryptoorchestrator.platform.optimize.trials import BarArrays
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.strategies.registry import USER_MODULE_PREFIX, get_strategy

__all__ = ["Executor", "RayExecutor", "open_study", "optimize", "walk_forward"]

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


def _resolve_strategy(strategy: Any) -> Any:
    """Return the strategy a name, class or instance designates, picklable by Ray's workers.

    A strategy loaded from a user file is pickled by value: the registry imports such files
    under module names a batch worker that had not loaded the same ``strategy_paths`` could not
    import.
    """
    strat = get_strategy(strategy)
    module = sys.modules.get(type(strat).__module__)
    if module is not None and module.__name__.startswith(USER_MODULE_PREFIX):
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    return strat


def _ray_executor(
    settings: Settings | None, num_cpus: int | None, shared: BarArrays | None
) -> RayExecutor:
    """Join (or start) Ray; put ``shared`` in the object store once for every study."""
    ray = ensure_ray(settings, num_cpus=num_cpus)
    return RayExecutor(ray.put(shared) if shared is not None else None)


_OPTIMIZER = Optimizer(_resolve_strategy, {"ray": _ray_executor})

#: ``co.optimize`` (``Optimizer.optimize``): ``executor="ray"``, the default, runs on this Ray.
optimize = _OPTIMIZER.optimize
#: Record a study's run without running it (the API answers with its id at once).
open_study = _OPTIMIZER.open_study
#: ``co.walk_forward``: one study per fold on the same Ray executor, the bars put once.
walk_forward = _OPTIMIZER.walk_forward
