"""Batch planning: probes first, then sized batches in multiples of the CPU count."""

from __future__ import annotations

import pytest
from _strategy import GRID_SPACE, sma_study

from cryptoorchestrator.platform.optimize.plan import POOL, BatchPlanner
from cryptoorchestrator.platform.optimize.space import trial_key
from cryptoorchestrator.platform.optimize.study import StudySpec
from cryptoorchestrator.platform.optimize.trials import TrialResult


def _spec(**kw: object) -> StudySpec:
    return sma_study(300, 2, **{"space": GRID_SPACE, "constraint": "fast < slow", **kw})


def _keys(batches: list[list[dict[str, int]]]) -> list[str]:
    return sorted(trial_key(p) for b in batches for p in b)


def test_probes_hold_the_rest_back_until_one_returns() -> None:
    spec = _spec()
    grid = spec.trial_source().ask(POOL)
    planner = BatchPlanner(spec, 2, probe_on_workers=True)
    assert planner.want == POOL
    probes = planner.plan(grid, len(grid), exhausted=True)
    assert [len(p) for p in probes] == [8, 8]
    assert planner.waiting
    assert planner.size is None
    assert planner.release(exhausted=True) == []  # the probes are still running
    timed = [TrialResult("k", {}, None, None, "succeeded", None, 0.001) for _ in range(8)]
    planner.probe_done(timed)
    assert planner.size == 79  # cheap trials: one batch per CPU for the 158 held back
    rest = planner.release(exhausted=True)
    assert not planner.waiting
    assert _keys(probes + rest) == _keys([grid])  # every trial exactly once
    slow = [TrialResult("k", {}, None, None, "succeeded", None, 10.0)]
    planner.probe_done(slow)  # sized once: a later probe changes nothing
    assert planner.size == 79


def test_a_fixed_size_plans_equal_rounds_without_timing() -> None:
    spec = _spec(batch_size=20)
    grid = spec.trial_source().ask(POOL)
    batches = BatchPlanner(spec, 2, probe_on_workers=True).plan(grid, len(grid), exhausted=False)
    assert len(batches) % 2 == 0
    assert max(map(len, batches)) <= 20
    assert _keys(batches) == _keys([grid])
    # with the source exhausted, the last round is cut into halving pieces
    tail = BatchPlanner(spec, 2, probe_on_workers=True).plan(grid, len(grid), exhausted=True)
    assert len(tail) > len(batches)
    assert _keys(tail) == _keys([grid])


def test_tpe_asks_one_batch_at_a_time_and_never_probes() -> None:
    spec = _spec(method="tpe", n_trials=30, seed=1, batch_size=4)
    planner = BatchPlanner(spec, 2, probe_on_workers=True)
    assert planner.want == 4
    new = spec.trial_source().ask(10)
    batches = planner.plan(new, 30, exhausted=False)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert not planner.waiting


@pytest.mark.parametrize("probe_on_workers", [True, False])
def test_a_small_study_is_timed_in_the_driver(probe_on_workers: bool) -> None:
    spec = _spec(space={"fast": [5, 10], "slow": [30, 60]}, constraint=None)
    new = spec.trial_source().ask(POOL)
    planner = BatchPlanner(spec, 2, probe_on_workers=probe_on_workers)
    batches = planner.plan(new, len(new), exhausted=True)
    assert planner.size is not None
    assert not planner.waiting
    assert _keys(batches) == _keys([new])
