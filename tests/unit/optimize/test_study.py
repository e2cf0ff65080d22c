"""The study spec: validation before any trial, a frozen value, and its key."""

from __future__ import annotations

import dataclasses

import pytest
from _strategy import SMALL_SPACE as SPACE
from _strategy import SmaCross, random_arrays

from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.study import build_study
from cryptoorchestrator.platform.optimize.trials import BarArrays


@pytest.fixture(scope="module")
def bars() -> BarArrays:
    return random_arrays(400, seed=1)


def test_spec_holds_the_validated_study(bars: BarArrays) -> None:
    spec = build_study(SmaCross(), bars, space=SPACE, constraint="fast < slow", fee_bps=5.0)
    assert spec.name == "sma_cross"
    assert spec.space.names == ("fast", "slow")
    assert spec.sim == SimConfig(fee_bps=5.0)
    assert spec.config.periods_per_year == 8760.0  # hourly bars
    assert spec.result_filter == spec.config.result_filter
    assert spec.independent
    assert spec.arrays is bars
    assert spec.trial_source().n_trials == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_key_is_the_study_identity(bars: BarArrays) -> None:
    spec = build_study(SmaCross(), bars, space=SPACE)
    again = build_study(SmaCross(), bars, space=SPACE, name="shown", batch_size=3)
    assert spec.key() == again.key()  # display name and batching do not change the study
    assert build_study(SmaCross(), bars, space=SPACE, fee_bps=1.0).key() != spec.key()
    assert build_study(SmaCross(), bars, space=SPACE, seed=1).key() != spec.key()
    fold = dataclasses.replace(spec, window=(0, 200))
    assert len(fold.arrays) == 200
    assert len(fold.bars) == 400
    assert fold.key() not in (
        spec.key(),
        build_study(SmaCross(), bars.window(0, 200), space=SPACE).key(),
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"space": {}}, "space"),
        ({"space": {"fast": [5], "slow": [3]}, "constraint": "fast < slow"}, "constraint"),
        ({"space": SPACE, "objective": "sharp"}, "objective"),
        ({"space": {"fast": [1, 5]}}, "space.fast"),
        ({"space": {"nope": [1]}}, "space.nope"),
        ({"space": SPACE, "method": "tpe"}, "n_trials"),
        ({"space": SPACE, "method": "anneal", "n_trials": 3}, "method"),
        ({"space": SPACE, "timeframe": "1d"}, "timeframe"),  # hourly bars
    ],
)
def test_bad_input_is_refused_by_name(
    bars: BarArrays, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        build_study(SmaCross(), bars, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
