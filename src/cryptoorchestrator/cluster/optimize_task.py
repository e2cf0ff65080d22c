"""The body of one sweep task, kept apart from :mod:`cryptoorchestrator.cluster.optimize`.

Ray pickles a remote function by reference, so each worker imports the module that defines it.
This module imports only what a batch needs (the trial runner, numpy, numba); defining the task
in ``cluster.optimize`` made every worker import pyarrow, SQLAlchemy and pydantic as well: more
resident memory per worker and a slower first task.
"""

from __future__ import annotations

from typing import Any

from cryptoorchestrator.platform.optimize.space import Params
from cryptoorchestrator.platform.optimize.trials import (
    BarArrays,
    TrialConfig,
    TrialResult,
    run_trials,
)


def batch_task(
    bars: BarArrays,
    window: tuple[int, int] | None,
    strategy: Any,
    batch: list[Params],
    config: TrialConfig,
) -> list[TrialResult]:
    """Run one batch of trials on ``bars`` (or its ``window``) in a Ray worker.

    Returns the results in batch order, each marked with the node that ran it.
    """
    import numba
    import ray

    from cryptoorchestrator.cluster.runtime import BATCH_NICENESS, lower_priority

    lower_priority(BATCH_NICENESS)  # a sweep yields to live trading on the same node
    # Ray limits its own threads per task but numba does not read that limit.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    numba.set_num_threads(max(1, min(int(cpus), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    arrays = bars.window(*window) if window is not None else bars
    results = run_trials(batch, arrays, strategy, config)
    node = ray.get_runtime_context().get_node_id()
    for r in results:
        r.node = node
    return results
