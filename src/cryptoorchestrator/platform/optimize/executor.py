"""The study driver, written against a :class:`BatchExecutor`: submit, wait, cancel.

:func:`run_study` asks the trial source for proposals, skips those a previous run of the same
study finished, plans the rest into batches (:class:`~.plan.BatchPlanner`), keeps the executor
busy, and absorbs finished batches: the source learns their values (TPE), the store records
them, the progress bar moves.  :class:`SerialExecutor` runs each batch in this process;
``cryptoorchestrator.cluster.optimize`` has the Ray executor.  Both call the same
:func:`~.trials.run_trials`, so the results are identical.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from cryptoorchestrator.platform.optimize import store as study_store
from cryptoorchestrator.platform.optimize.plan import BatchPlanner
from cryptoorchestrator.platform.optimize.results import OptimizationResult
from cryptoorchestrator.platform.optimize.sampling import TrialSource
from cryptoorchestrator.platform.optimize.space import Params, trial_key
from cryptoorchestrator.platform.optimize.study import StudySpec, open_study_run
from cryptoorchestrator.platform.optimize.trials import FAILED, OK, TrialResult, best_of, run_trials
from cryptoorchestrator.platform.settings import Settings

T = TypeVar("T")

#: Seconds between two looks at the store for a cancel request from another process.
_CANCEL_POLL_S = 1.0
#: Seconds :func:`run_study` waits for a batch before looking for a cancel request again.
_WAIT_S = 0.5


class FinishedBatch(NamedTuple):
    """A batch that ran: its results, or the error that lost them all (a worker died)."""

    batch: list[Params]
    results: list[TrialResult] | None
    error: Exception | None = None


class BatchExecutor(Protocol):
    """Where a study's batches run."""

    #: Whether the first batches may be probes timed where they run (see BatchPlanner).
    probe_on_workers: bool

    def start(self, spec: StudySpec) -> int:
        """Get ready for ``spec``'s batches; return the number of CPUs to plan batches for."""
        ...

    def has_room(self) -> bool:
        """Return whether another batch may be submitted now."""
        ...

    def idle(self) -> bool:
        """Return whether no submitted batch is left to wait for."""
        ...

    def submit(self, batch: list[Params]) -> None:
        """Start running ``batch``."""
        ...

    def wait(self, timeout: float) -> list[FinishedBatch]:
        """Return the batches that finished, waiting up to ``timeout`` seconds for one."""
        ...

    def cancel(self) -> None:
        """Stop the batches still running; their results are not needed."""
        ...

    def finish(self) -> None:
        """Release what :meth:`start` set up, raising a failure no batch surfaced."""
        ...


class SerialExecutor:
    """Run each batch in this process when it is submitted, one at a time."""

    probe_on_workers = False

    def __init__(self) -> None:
        self._spec: StudySpec | None = None
        self._done: deque[FinishedBatch] = deque()

    def start(self, spec: StudySpec) -> int:
        """Remember the study; plan for one CPU."""
        self._spec = spec
        self._done.clear()
        return 1

    def has_room(self) -> bool:
        """Return True until the last batch's results were taken (so TPE learns them first)."""
        return not self._done

    def idle(self) -> bool:
        """Return whether the last batch's results were taken."""
        return not self._done

    def submit(self, batch: list[Params]) -> None:
        """Run ``batch`` now; a bug in the runner propagates (a trial's error does not)."""
        spec = self._spec
        assert spec is not None, "start() first"
        results = run_trials(batch, spec.arrays, spec.strategy, spec.config)
        self._done.append(FinishedBatch(batch, results))

    def wait(self, timeout: float) -> list[FinishedBatch]:
        """Return the batch run last (nothing runs in the background)."""
        out = list(self._done)
        self._done.clear()
        return out

    def cancel(self) -> None:
        """Drop results not taken yet (nothing is running)."""
        self._done.clear()

    def finish(self) -> None:
        """Nothing to release."""


class Background(Generic[T]):
    """Call ``fn`` in a daemon thread; :meth:`result` waits and returns (or raises) its outcome."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._out: T | None = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._out = self._fn()
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._exc = exc

    def result(self) -> T:
        """Wait for the call; return its value or raise its exception."""
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out  # type: ignore[return-value]


class Progress:
    """A rich progress bar with the best value so far; does nothing when not ``enabled``."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._p: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._p = RichProgress(
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
        """Show ``done`` trials and the best value."""
        if self._p is not None:
            self._p.update(self._task, completed=done, best="-" if best is None else f"{best:.4g}")

    def close(self) -> None:
        """Stop drawing."""
        if self._p is not None:
            self._p.stop()


class _Driver:
    """The state of one study while it runs: results in proposal order, the best, the run."""

    def __init__(
        self,
        spec: StudySpec,
        source: TrialSource,
        planner: BatchPlanner,
        settings: Settings | None,
        run_id: str | None,
        done: Mapping[str, TrialResult],
        bar: Progress,
        cancel_event: threading.Event | None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.planner = planner
        self.settings = settings
        self.run_id = run_id
        self.done = done
        self.cancel_event = cancel_event
        self.total = source.n_trials
        self.results: dict[str, TrialResult] = {}
        self.order: list[str] = []
        self.n_reused = 0
        self.best: float | None = None
        self.bar = bar
        self._last_cancel_check = time.monotonic()

    @property
    def trials(self) -> list[TrialResult]:
        """The results so far, in proposal order."""
        return [self.results[k] for k in self.order if k in self.results]

    def absorb(self, batch_results: Sequence[TrialResult]) -> None:
        """Take finished trials: tell the source, keep the best, record them, move the bar."""
        for r in batch_results:
            self.results[r.trial_key] = r
            self.source.tell(r.params, r.value if r.status == OK else None)
            if (
                r.status == OK
                and r.value is not None
                and self.spec.objective.is_better(r.value, self.best)
            ):
                self.best = r.value
        if self.settings is not None and self.run_id is not None:
            fresh = [r for r in batch_results if not r.reused]
            study_store.record_trials(
                self.settings, self.run_id, fresh, progress=len(self.results) / max(self.total, 1)
            )
        self.bar.update(len(self.results), self.best)

    def cancelled(self) -> bool:
        """Return whether the event is set or (looked up at most once a second) the store asks."""
        if self.cancel_event is not None and self.cancel_event.is_set():
            return True
        if (
            self.settings is not None
            and self.run_id is not None
            and time.monotonic() - self._last_cancel_check > _CANCEL_POLL_S
        ):
            self._last_cancel_check = time.monotonic()
            return study_store.cancel_requested(self.settings, self.run_id)
        return False

    def plan_next(self) -> list[list[Params]]:
        """Return the next batches to submit (none when waiting for probes or out of trials)."""
        if self.planner.waiting:
            return self.planner.release(self.source.exhausted)
        proposals = self.source.ask(self.planner.want)
        if not proposals:
            return []
        before = len(self.results)
        new = self._split_known(proposals)
        self.n_reused += len(self.results) - before
        if not new:
            return []
        return self.planner.plan(new, self.total - self.n_reused, self.source.exhausted)

    def _split_known(self, proposals: Sequence[Params]) -> list[Params]:
        """Note the proposal order; absorb the trials a previous run finished; return the rest."""
        new: list[Params] = []
        reused: list[TrialResult] = []
        for p in proposals:
            k = trial_key(p)
            if k in self.results:
                continue
            self.order.append(k)
            if k in self.done:
                reused.append(self.done[k])
            else:
                new.append(p)
        if reused:
            self.absorb(reused)
        return new

    def loop(self, executor: BatchExecutor) -> str:
        """Keep ``executor`` busy until the trials run out or a cancel; return the status."""
        queue: deque[list[Params]] = deque()
        while True:
            if self.cancelled():
                return study_store.CANCELLED
            while executor.has_room() and (
                queue or self.planner.waiting or not self.source.exhausted
            ):
                if not queue:
                    queue.extend(self.plan_next())
                    if not queue:
                        if self.source.exhausted or self.planner.waiting:
                            break
                        continue
                executor.submit(queue.popleft())
            if executor.idle():
                return study_store.SUCCEEDED
            for finished in executor.wait(_WAIT_S):
                if finished.results is not None:
                    self.absorb(finished.results)
                    self.planner.probe_done(finished.results)
                    continue
                # the worker died: these trials failed, the study goes on
                self.planner.probe_failed()
                exc = finished.error
                err = f"{type(exc).__name__}: {exc}"[:4000]
                self.absorb(
                    [
                        TrialResult(trial_key(p), dict(p), None, None, FAILED, err)
                        for p in finished.batch
                    ]
                )

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the run's outcome and best trial (when the study is stored)."""
        if self.settings is None or self.run_id is None:
            return
        trials = self.trials
        b = best_of(trials, self.spec.objective)
        study_store.finish_run(
            self.settings,
            self.run_id,
            status=status,
            n_trials=len(trials),
            best_params=b.params if b else None,
            best_value=b.value if b else None,
            error=error,
        )


def run_study(
    spec: StudySpec,
    executor: BatchExecutor,
    *,
    settings: Settings | None = None,
    progress: bool = True,
    cancel_event: threading.Event | None = None,
) -> OptimizationResult:
    """Run a study's trials in batches on ``executor``; return every trial and the best.

    Parameters
    ----------
    spec
        The validated study (:func:`~.study.build_study`).
    executor
        Where batches run (:class:`SerialExecutor`, or the cluster's Ray executor).
    settings
        Where to record the run and its trials; None keeps nothing.  A stored study resumes:
        trials a previous run of the same key finished are reused, not run again.
    progress, cancel_event
        A progress bar; an event that cancels the study when set (so does a cancel request in
        the store).

    Returns
    -------
    OptimizationResult
        With status succeeded or cancelled; on any other failure the run is recorded as
        failed and the exception propagates (a KeyboardInterrupt marks it cancelled).
    """
    t_start = time.perf_counter()
    n_cpus = executor.start(spec)
    # The driver's work before the first task runs on the cores the workers are about to use:
    # hashing (the study key) releases the GIL, so it runs in a thread while this one builds
    # the source.  Without a store the key is only reported: it is computed if asked.
    hasher = Background(spec.key) if settings is not None else None
    source = spec.trial_source()
    planner = BatchPlanner(spec, n_cpus, probe_on_workers=executor.probe_on_workers)
    run_id: str | None = None
    done: dict[str, TrialResult] = {}
    if settings is not None:
        assert hasher is not None
        run_id, done = open_study_run(spec, settings, hasher.result())
    bar = Progress(progress, source.n_trials, f"{spec.name} [{spec.method}]")
    driver = _Driver(spec, source, planner, settings, run_id, done, bar, cancel_event)
    try:
        status = driver.loop(executor)
    except KeyboardInterrupt:
        executor.cancel()
        driver.finish(study_store.CANCELLED)
        bar.close()
        raise
    except BaseException as exc:
        executor.cancel()
        driver.finish(study_store.FAILED_RUN, error=f"{type(exc).__name__}: {exc}")
        bar.close()
        raise
    if status == study_store.CANCELLED:
        executor.cancel()
    bar.close()
    trials = driver.trials
    driver.finish(status)
    executor.finish()
    return OptimizationResult(
        hasher.result() if hasher is not None else spec.key,
        run_id,
        status,
        spec.strategy,
        spec.objective,
        spec.space.names,
        trials,
        spec.config,
        driver.n_reused,
        time.perf_counter() - t_start,
        planner.size or 0,
        spec.name,
    )
