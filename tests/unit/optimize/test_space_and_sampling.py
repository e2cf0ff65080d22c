"""Search spaces, safe constraints, objectives and trial sources (no Ray, no strategy)."""

from __future__ import annotations

import pickle

import pytest
from _strategy import GRID_SPACE as SPACE

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.expr import Expression
from cryptoorchestrator.platform.optimize.objective import parse_objective, parse_result_filter
from cryptoorchestrator.platform.optimize.sampling import ParamConstraint, TrialSource
from cryptoorchestrator.platform.optimize.space import parse_space, trial_key
from cryptoorchestrator.platform.optimize.walkforward import split_folds, stitch_equity


def test_cli_ranges_are_inclusive_and_equal_python_ranges() -> None:
    cli = parse_space(["fast=5:50:5", "slow=20:200:10"])
    py = parse_space(SPACE)
    assert list(cli.grid()) == list(py.grid())
    assert cli.grid_size() == 10 * 19


def test_grid_with_constraint_has_174_pairs() -> None:
    space = parse_space(SPACE)
    src = TrialSource(space, ParamConstraint("fast < slow", space.names), "grid")
    trials = src.ask(1000)
    assert len(trials) == 174
    assert all(t["fast"] < t["slow"] for t in trials)
    assert src.exhausted


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("fast < slow", {"fast": 1, "slow": 2}, True),
        ("slow >= 2 * fast and not fast == 3", {"fast": 3, "slow": 6}, False),
        ("slow - fast > 10 or fast % 2 == 0", {"fast": 4, "slow": 5}, True),
        ("1 < fast < 3", {"fast": 3}, False),
    ],
)
def test_expressions_evaluate(text: str, values: dict[str, int], expected: bool) -> None:
    assert Expression(text, ["fast", "slow"]).holds(values) is expected


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "fast.real < 3",
        "open('x')",
        "fast < slowx",
        "[1][0] < fast",
        "lambda: 1",
        "fast <",
        "'a' < fast",
    ],
)
def test_expressions_reject_anything_but_arithmetic_and_comparisons(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Expression(text, ["fast", "slow"])
    assert info.value.field == "constraint"


def test_expression_survives_pickling_and_huge_powers_are_false() -> None:
    e = pickle.loads(pickle.dumps(Expression("fast ** slow > 1", ["fast", "slow"])))  # noqa: S301
    assert e.holds({"fast": 2, "slow": 3})
    assert not e.holds({"fast": 9, "slow": 99})


def test_trial_keys_are_deterministic_and_order_free() -> None:
    assert trial_key({"fast": 5, "slow": 20}) == trial_key({"slow": 20, "fast": 5.0})
    assert trial_key({"fast": 5, "slow": 20}) != trial_key({"fast": 5, "slow": 30})


@pytest.mark.parametrize(
    ("space", "field"),
    [
        ({}, "space"),
        ({"fast": []}, "space.fast"),
        ({"fast": "9:1:1"}, "space.fast"),
        ({"fast": "1:5:0"}, "space.fast"),
        (["fast"], "space"),
    ],
)
def test_bad_spaces_name_the_field(space: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_space(space)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize("method", ["grid", "random", "tpe"])
def test_unsatisfiable_constraint_is_rejected(method: str) -> None:
    space = parse_space(SPACE)
    with pytest.raises(InvalidInputError, match="no point"):
        TrialSource(space, ParamConstraint("fast > slow + 1000", space.names), method, n_trials=10)


def test_random_is_seeded_distinct_and_capped_by_the_valid_space() -> None:
    space = parse_space(SPACE)
    cons = ParamConstraint("fast < slow", space.names)
    a = TrialSource(space, cons, "random", n_trials=50, seed=7).ask(100)
    b = TrialSource(space, cons, "random", n_trials=50, seed=7).ask(100)
    assert a == b
    assert len(a) == 50
    assert len({trial_key(p) for p in a}) == 50
    assert len(TrialSource(space, cons, "random", n_trials=10_000, seed=1).ask(10_000)) == 174


def test_tpe_proposes_valid_distinct_points_and_learns() -> None:
    space = parse_space({"x": range(0, 101)})
    src = TrialSource(
        space, ParamConstraint(None, space.names), "tpe", n_trials=40, seed=3, maximize=False
    )
    seen = []
    while not src.exhausted:
        batch = src.ask(4)
        for p in batch:
            src.tell(p, float((p["x"] - 70) ** 2))
        seen += [p["x"] for p in batch]
    assert len(seen) == len(set(seen)) == 40
    # after its random start-up trials TPE concentrates near the minimum at 70
    assert sum(abs(x - 70) <= 15 for x in seen[20:]) > sum(abs(x - 70) <= 15 for x in seen[:10])


def test_objectives_and_result_filters() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_objective("sharpness")
    assert "sharpe" in str(info.value)
    assert parse_objective("max_drawdown").direction == "minimize"
    assert parse_objective("sharpe", minimize=True).direction == "minimize"
    obj = parse_objective(lambda m: m["total_return"] - m["max_drawdown"])
    assert obj.value({"total_return": 0.5, "max_drawdown": 0.2}) == pytest.approx(0.3)
    filt = parse_result_filter(min_trades=5, expression="max_drawdown < 0.5")
    assert filt.reason({"trade_count": 4.0, "max_drawdown": 0.1}) is not None
    assert filt.reason({"trade_count": 5.0, "max_drawdown": 0.6}) is not None
    assert filt.reason({"trade_count": 5.0, "max_drawdown": 0.1}) is None


@pytest.mark.parametrize("mode", ["rolling", "anchored"])
def test_folds_tile_the_data(mode: str) -> None:
    folds = split_folds(1000, 4, train_frac=0.6, mode=mode)  # type: ignore[arg-type]
    assert folds[0].train_start == 0
    for a, b in zip(folds, folds[1:], strict=False):
        assert b.test_start == a.test_stop
    for f in folds:
        assert f.train_stop == f.test_start
        if mode == "anchored":
            assert f.train_start == 0
        else:
            assert f.train_stop - f.train_start == folds[0].train_stop
    assert folds[-1].test_stop <= 1000
    with pytest.raises(InvalidInputError):
        split_folds(10, 20)


def test_stitching_carries_capital_forward() -> None:
    import numpy as np

    eq = stitch_equity([np.array([100.0, 110.0]), np.array([100.0, 50.0])], 100.0)
    assert eq.tolist() == pytest.approx([100.0, 110.0, 110.0, 55.0], rel=1e-12)
