"""Ray fan-out: distributed == serial, resume, cancel, failed trials, walk-forward, bad input."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "optimize"))

import _strategy  # noqa: E402
from _strategy import Exploding, SmaCross, random_bars  # noqa: E402

from cryptoorchestrator.cluster.optimize import optimize, walk_forward  # noqa: E402
from cryptoorchestrator.platform.errors import InvalidInputError  # noqa: E402
from cryptoorchestrator.platform.optimize.trials import (  # noqa: E402
    FAILED,
    bars_to_arrays,
    best_of,
    run_trials,
)

SPACE = {"fast": range(5, 55, 5), "slow": range(20, 210, 10)}


@pytest.fixture(scope="module")
def bars() -> dict[str, Any]:
    return random_bars(20_000, seed=11)


@pytest.fixture(autouse=True)
def _by_value(ray_session: Any) -> None:
    from ray import cloudpickle

    # The helper strategies live in the tests, which Ray workers cannot import by name.
    cloudpickle.register_pickle_by_value(_strategy)


def test_distributed_equals_serial_exactly(bars: dict[str, Any], settings: Any) -> None:
    res = optimize(
        SmaCross(),
        bars,
        space=SPACE,
        constraint="fast < slow",
        objective="sharpe",
        settings=settings,
        progress=False,
        batch_size=10,
    )
    assert res.status == "succeeded"
    assert len(res.trials) == 174
    assert len({r.node for r in res.trials}) >= 1
    assert all(r.node for r in res.trials)
    serial = run_trials(
        [r.params for r in res.trials], bars_to_arrays(bars), SmaCross(), res.config
    )
    assert all(a.same_outcome(b) for a, b in zip(res.trials, serial, strict=True))
    assert res.best == best_of(serial, res.objective).params  # type: ignore[union-attr]
    df = res.results.to_pandas()
    assert len(df) == 174
    assert df.loc[df["value"].idxmax(), ["fast", "slow"]].to_dict() == res.best
    assert res.plot(Path(settings.var_dir) / "heat.png").stat().st_size > 1000


def test_resume_skips_finished_trials(bars: dict[str, Any], settings: Any) -> None:
    kw: dict[str, Any] = dict(
        space=SPACE,
        constraint="fast < slow",
        method="random",
        n_trials=30,
        seed=5,
        settings=settings,
        progress=False,
    )
    first = optimize(SmaCross(), bars, **kw)
    again = optimize(SmaCross(), bars, **kw)
    assert again.study_key == first.study_key
    assert again.run_id == first.run_id
    assert again.n_reused == 30
    assert all(r.reused for r in again.trials)
    assert again.best == first.best
    more = optimize(SmaCross(), bars, **{**kw, "n_trials": 40})  # same study, extended
    assert more.n_reused == 30
    assert len(more.trials) == 40


def test_cancel_keeps_finished_trials_and_marks_the_run(
    bars: dict[str, Any], settings: Any
) -> None:
    from cryptoorchestrator.platform.storage.db import session_scope
    from cryptoorchestrator.platform.storage.models import OptimizationRun, OptimizationTrial

    event = threading.Event()
    event.set()  # cancelled before the first batch returns
    res = optimize(
        SmaCross(),
        bars,
        space=SPACE,
        constraint="fast < slow",
        settings=settings,
        progress=False,
        cancel_event=event,
        batch_size=5,
    )
    assert res.status == "cancelled"
    assert len(res.trials) < 174
    with session_scope(settings) as s:
        run = s.get(OptimizationRun, res.run_id)
        assert run is not None
        assert run.status == "cancelled"
        n = s.query(OptimizationTrial).filter_by(run_id=res.run_id).count()
    assert n == len(res.trials)
    resumed = optimize(
        SmaCross(), bars, space=SPACE, constraint="fast < slow", settings=settings, progress=False
    )
    assert resumed.status == "succeeded"
    assert len(resumed.trials) == 174
    assert resumed.n_reused == n


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    bars: dict[str, Any], settings: Any
) -> None:
    res = optimize(
        Exploding(), bars, space=SPACE, constraint="fast < slow", settings=settings, progress=False
    )
    failed = [r for r in res.trials if r.status == FAILED]
    assert failed
    assert all(r.params["fast"] == 10 for r in failed)
    assert all("ZeroDivisionError" in (r.error or "") for r in failed)
    assert len(res.trials) == 174
    assert res.best is not None
    assert res.best["fast"] != 10


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"space": {}}, "space"),
        ({"space": SPACE, "constraint": "fast > slow + 500"}, "constraint"),
        ({"space": SPACE, "objective": "sharp"}, "objective"),
        ({"space": {"fast": [1, 5]}}, "space.fast"),
        ({"space": {"nope": [1, 5]}}, "space.nope"),
        ({"space": SPACE, "method": "tpe"}, "n_trials"),
    ],
)
def test_bad_input_fails_before_any_task(
    bars: dict[str, Any], kwargs: dict[str, Any], field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptoorchestrator.cluster import optimize as mod

    monkeypatch.setattr(mod, "_remote_batch", lambda: pytest.fail("a task started"))
    with pytest.raises(InvalidInputError) as info:
        optimize(SmaCross(), bars, store=False, progress=False, **kwargs)
    assert info.value.field == field


def test_tpe_runs_on_ray(bars: dict[str, Any]) -> None:
    res = optimize(
        SmaCross(),
        bars,
        space=SPACE,
        constraint="fast < slow",
        method="tpe",
        n_trials=24,
        seed=1,
        store=False,
        progress=False,
        batch_size=4,
    )
    assert len(res.trials) == 24
    assert len({r.trial_key for r in res.trials}) == 24
    assert all(r.params["fast"] < r.params["slow"] for r in res.trials)


@pytest.mark.parametrize("mode", ["rolling", "anchored"])
def test_walk_forward(bars: dict[str, Any], mode: str) -> None:
    wf = walk_forward(
        SmaCross(),
        bars,
        space={"fast": [5, 10, 20], "slow": [30, 60]},
        n_folds=3,
        mode=mode,
        store=False,
        progress=False,
    )
    assert len(wf.folds) == 3
    table = wf.table.to_pandas()
    assert {"is_sharpe", "oos_sharpe", "param_fast"} <= set(table.columns)
    tested = sum(f["test_stop"] - f["test_start"] for f in wf.folds)
    assert wf.equity.size == tested
    # the stitched curve continues each fold from the previous fold's end
    for f, nxt in zip(wf.folds, wf.folds[1:], strict=False):
        assert nxt["test_start"] == f["test_stop"]
    serial = walk_forward(
        SmaCross(),
        bars,
        space={"fast": [5, 10, 20], "slow": [30, 60]},
        n_folds=3,
        mode=mode,
        store=False,
        progress=False,
        executor="serial",
    )
    assert [f["params"] for f in serial.folds] == [f["params"] for f in wf.folds]
    assert (serial.equity == wf.equity).all()
