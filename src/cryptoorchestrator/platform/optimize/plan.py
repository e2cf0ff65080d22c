"""Batch planning: how many trials go into one batch, and which trials go together.

A batch should hold about ``batch_target_s`` of work: big enough that a task's overhead and its
indicator cache pay off, small enough to keep every CPU busy to the end.  The cost of a trial is
measured first, either on probe batches the workers run (one compact block of the space per CPU)
or on a small batch in the driver; :class:`BatchPlanner` keeps that state between calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from cryptoorchestrator.platform.optimize.space import Params
from cryptoorchestrator.platform.optimize.study import StudySpec
from cryptoorchestrator.platform.optimize.trials import (
    BarArrays,
    TrialResult,
    plan_batches,
    run_trials,
    z_order,
)

#: Bars and trials of the sizing measurement: enough to time a batch, small next to a study.
MEASURE_BARS = 100_000
MEASURE_TRIALS = 8
_MEASURE_RUNS = 2
#: Trials planned into batches at once when proposals do not depend on results (grid, random).
POOL = 4096
#: The last round's batches are halved until a piece holds at most this many trials.
TAIL_MIN_PIECE = 6


def readonly(bars: BarArrays) -> BarArrays:
    """Return read-only views of ``bars``, as a Ray worker sees them from the object store."""
    views = []
    for a in bars:
        v = a.view()
        v.flags.writeable = False
        views.append(v)
    return BarArrays(*views)


def measure_batch(spec: StudySpec, sample: Sequence[Params]) -> float:
    """Return the estimated seconds per trial on the study's bars, timing a batch on a slice.

    The batch goes through :func:`run_trials` as a task's would (indicator reuse included), on
    read-only arrays, which also compiles numba's read-only specialisation in this process; the
    time is scaled by the bar count (the engine and the indicators are linear in bars).  A
    single cold trial on the full data mistook page faults for work.
    """
    ro = readonly(spec.arrays)
    n = len(ro)
    run_trials(list(sample[:1]), ro.window(0, min(n, 2_000)), spec.strategy, spec.config)
    m = min(n, MEASURE_BARS)
    window = ro.window(0, m)
    # This thread's CPU time, not the wall clock: the put and the hash run beside it, and a
    # busy machine made the wall-clock estimate (so the batch count) vary from run to run.
    # The better of two runs: the first one in a process also pays for fresh memory pages.
    elapsed = math.inf
    for _ in range(_MEASURE_RUNS):
        t0 = time.thread_time()
        run_trials(list(sample), window, spec.strategy, spec.config)
        elapsed = min(elapsed, time.thread_time() - t0)
    return max(elapsed / max(len(sample), 1) * n / m, 1e-6)


def n_batches(trial_s: float, n_total: int, n_cpus: int, target_s: float) -> int:
    """Return how many batches to cut ``n_total`` trials into (each about ``target_s`` long)."""
    n = math.ceil(n_total * trial_s / target_s)
    # At least one batch per CPU (no idle worker, and every worker is warmed), and a multiple
    # of the CPU count with equal batches, so no worker idles on the last round.
    n = max(n, min(n_cpus, n_total))
    if n > 1 and n_cpus > 1:
        n = math.ceil(n / n_cpus) * n_cpus
    return max(1, min(n, n_total))


def batch_size(trial_s: float, n_total: int, n_cpus: int, target_s: float) -> int:
    """Return the number of trials per batch (see :func:`n_batches`)."""
    return max(1, math.ceil(n_total / n_batches(trial_s, n_total, n_cpus, target_s)))


def split_tail(batches: list[list[Params]], n_cpus: int) -> list[list[Params]]:
    """Cut the last round of batches (one per CPU) into halving pieces, neighbours together.

    Equal batches do not cost the same (an SMA cross with a short fast period trades far more
    often, so the first batches of a grid run longer than the last), and a worker's first batch
    also pays for its fresh memory, so the workers reach the last round apart by up to a
    fraction of a batch.  Each batch of that round becomes pieces of a half, a quarter, an
    eighth... down to ``TAIL_MIN_PIECE`` trials, sent largest first (one of each CPU's at each
    size): the worker that gets there first takes more of the rest, and the workers finish at
    most a small piece apart.  One CPU has nobody to wait for: its plan is left alone.
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


def probes(new: list[Params], n_cpus: int) -> tuple[list[list[Params]], list[Params]] | None:
    """Return a first batch per CPU to time the study by, and the trials left; None if small.

    Each probe is a compact block of the space (Z-order) from another part of it, so their
    average cost stands for the study's: short fast periods of an SMA cross trade far more
    often than long ones.
    """
    n_probe = MEASURE_TRIALS
    if len(new) < 4 * n_probe * n_cpus:
        return None
    ordered = z_order(new)
    stride = len(ordered) // n_cpus
    starts = [k * stride for k in range(n_cpus)]
    picked = {i for s in starts for i in range(s, s + n_probe)}
    found = [ordered[s : s + n_probe] for s in starts]
    rest = [p for i, p in enumerate(ordered) if i not in picked]
    return found, rest


def probe_trial_s(results: Sequence[TrialResult]) -> float:
    """Return the seconds per trial a finished probe took (its indicators included)."""
    timed = [r.duration_s for r in results if r.duration_s > 0]
    return max(sum(timed) / len(timed), 1e-6) if timed else 1e-6


class BatchPlanner:
    """Cut a study's new trials into batches, sizing them on the first trials' cost.

    Parameters
    ----------
    spec
        The study (its method, fixed ``batch_size`` or ``batch_target_s``).
    n_cpus
        The CPUs the batches run on; batches come in multiples of it.
    probe_on_workers
        Whether the first batches may be probes timed where they run, the other trials held
        back until one returns; otherwise a small batch is timed here.
    """

    def __init__(self, spec: StudySpec, n_cpus: int, *, probe_on_workers: bool) -> None:
        self._spec = spec
        self._n_cpus = n_cpus
        self._probe = probe_on_workers and spec.independent
        self.size: int | None = spec.batch_size
        # Trials planned once the probes have timed a batch.
        self._held_back: list[Params] = []

    @property
    def waiting(self) -> bool:
        """Return whether trials are held back until a probe times the study."""
        return bool(self._held_back)

    @property
    def want(self) -> int:
        """Return how many trials to ask the source for next."""
        if self._spec.independent:
            # Proposals do not depend on results: plan many at once (neighbours together, for
            # indicator reuse).  TPE asks one batch at a time.
            return POOL
        return self.size or MEASURE_TRIALS

    def release(self, exhausted: bool) -> list[list[Params]]:
        """Return the held-back trials as batches once sized; nothing while probes run."""
        if self.size is None:
            return []
        new, self._held_back = self._held_back, []
        return self._independent(new, exhausted)

    def plan(self, new: list[Params], n_left: int, exhausted: bool) -> list[list[Params]]:
        """Return batches for ``new`` trials, ``n_left`` of the study's trials still to run."""
        if self.size is None:
            found = probes(new, self._n_cpus) if self._probe else None
            if found is not None:
                # The workers time the first batches themselves, while the driver waits:
                # timing a batch here held every core's work back.
                self._held_back = found[1]
                return found[0]
            trial_s = measure_batch(self._spec, new[:MEASURE_TRIALS])
            self.size = batch_size(trial_s, n_left, self._n_cpus, self._spec.batch_target_s)
        if not self._spec.independent:
            size = self.size
            if len(new) <= size:
                return [new]
            return [new[i : i + size] for i in range(0, len(new), size)]
        return self._independent(new, exhausted)

    def probe_done(self, results: Sequence[TrialResult]) -> None:
        """Size the held-back trials by a finished probe's cost (once)."""
        if self.size is None and self._held_back:
            trial_s = probe_trial_s(results)
            self.size = batch_size(
                trial_s, len(self._held_back), self._n_cpus, self._spec.batch_target_s
            )

    def probe_failed(self) -> None:
        """Size the held-back trials by timing a batch here, a probe having failed (once)."""
        if self.size is None and self._held_back:
            trial_s = measure_batch(self._spec, self._held_back[:MEASURE_TRIALS])
            self.size = batch_size(
                trial_s, len(self._held_back), self._n_cpus, self._spec.batch_target_s
            )

    def _independent(self, new: list[Params], exhausted: bool) -> list[list[Params]]:
        assert self.size is not None
        n = math.ceil(len(new) / self.size)
        if n > 1 and self._n_cpus > 1:
            n = math.ceil(n / self._n_cpus) * self._n_cpus
        batches = plan_batches(new, n, getattr(self._spec.strategy, "sweep_order", ()))
        return split_tail(batches, self._n_cpus) if exhausted else batches
