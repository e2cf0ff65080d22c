"""The public study functions without Ray: injected strategy resolution and executors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _strategy import SMALL_SPACE, SmaCross, random_bars, trial_config

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.executor import BatchExecutor, SerialExecutor
from cryptoorchestrator.platform.optimize.optimizer import Optimizer
from cryptoorchestrator.platform.optimize.trials import BarArrays, bars_to_arrays, run_trials
from cryptoorchestrator.platform.settings import Settings

QUIET: dict[str, Any] = {"store": False, "progress": False}


class Factory:
    """An executor factory that records its calls and runs the batches serially."""

    def __init__(self) -> None:
        self.calls: list[tuple[Settings | None, int | None, BarArrays | None]] = []

    def __call__(
        self, settings: Settings | None, num_cpus: int | None, shared: BarArrays | None
    ) -> BatchExecutor:
        self.calls.append((settings, num_cpus, shared))
        return SerialExecutor()


def _refuse(settings: Settings | None, num_cpus: int | None, shared: Any) -> BatchExecutor:
    pytest.fail("an executor was made for a study that should have been refused")


def _resolver(names: dict[str, Any]) -> Any:
    return lambda strategy: names.get(strategy, strategy) if isinstance(strategy, str) else strategy


@pytest.fixture(scope="module")
def bars() -> dict[str, np.ndarray]:
    return random_bars(600, seed=7)


def test_serial_study_equals_its_trials(bars: dict[str, np.ndarray]) -> None:
    opt = Optimizer(_resolver({"mine": SmaCross()}), {})
    res = opt.optimize("mine", bars, space=SMALL_SPACE, executor="serial", **QUIET)
    assert res.status == "succeeded"
    assert len(res.trials) == 6
    again = run_trials(
        [t.params for t in res.trials], bars_to_arrays(bars), SmaCross(), trial_config()
    )
    assert all(a.same_outcome(b) for a, b in zip(res.trials, again, strict=True))


def test_a_named_executor_gets_the_settings_and_cpus_but_no_shared_bars(
    bars: dict[str, np.ndarray],
) -> None:
    factory = Factory()
    opt = Optimizer(_resolver({}), {"ray": factory})
    res = opt.optimize(SmaCross(), bars, space=SMALL_SPACE, num_cpus=3, **QUIET)
    assert len(res.trials) == 6
    assert factory.calls == [(None, 3, None)]


def test_walk_forward_hands_its_executor_the_bars_once(bars: dict[str, np.ndarray]) -> None:
    factory = Factory()
    opt = Optimizer(_resolver({}), {"ray": factory})
    wf = opt.walk_forward(SmaCross(), bars, space=SMALL_SPACE, n_folds=3, **QUIET)
    assert len(wf.folds) == 3
    assert len(factory.calls) == 1
    _, _, shared = factory.calls[0]
    assert shared is not None
    assert np.array_equal(shared.close, bars["close"])


def test_an_unknown_executor_is_refused_naming_the_known_ones(
    bars: dict[str, np.ndarray],
) -> None:
    opt = Optimizer(_resolver({}), {"ray": _refuse})
    with pytest.raises(InvalidInputError) as info:
        opt.optimize(SmaCross(), bars, space=SMALL_SPACE, executor="dask", **QUIET)  # type: ignore[arg-type]
    assert info.value.field == "executor"
    assert info.value.allowed == "ray, serial"


def test_ray_is_unknown_to_an_optimizer_built_without_it(bars: dict[str, np.ndarray]) -> None:
    with pytest.raises(InvalidInputError) as info:
        Optimizer(_resolver({}), {}).optimize(SmaCross(), bars, space=SMALL_SPACE, **QUIET)
    assert (info.value.field, info.value.allowed) == ("executor", "serial")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"space": {}}, "space"),
        ({"space": SMALL_SPACE, "objective": "sharp"}, "objective"),
        ({"space": {"nope": [1, 2]}}, "space.nope"),
    ],
)
def test_bad_input_is_refused_before_an_executor_is_made(
    bars: dict[str, np.ndarray], kwargs: dict[str, Any], field: str
) -> None:
    opt = Optimizer(_resolver({}), {"ray": _refuse})
    for run in (opt.optimize, opt.walk_forward):
        with pytest.raises(InvalidInputError) as info:
            run(SmaCross(), bars, **kwargs, **QUIET)
        assert info.value.field == field


def test_what_resolves_to_no_strategy_is_refused(bars: dict[str, np.ndarray]) -> None:
    opt = Optimizer(_resolver({"duck": object()}), {"ray": _refuse})
    with pytest.raises(InvalidInputError) as info:
        opt.optimize("duck", bars, space=SMALL_SPACE, executor="serial", **QUIET)
    assert info.value.field == "strategy"
