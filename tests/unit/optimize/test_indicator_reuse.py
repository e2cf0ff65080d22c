"""Indicator reuse within an optimizer batch: same signals and metrics as each trial alone."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from _strategy import random_arrays, trial_config

from cryptoorchestrator.platform.optimize import trials as trials_mod
from cryptoorchestrator.platform.optimize.trials import (
    OK,
    run_trials,
    z_order,
)
from cryptoorchestrator.platform.strategy import indicators as ta
from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy, run_signals
from cryptoorchestrator.platform.strategy.memo import (
    IndicatorCache,
    active_cache,
    indicator_cache,
    memoised,
    signals_in_batch,
)
from cryptoorchestrator.strategies.registry import get_strategy


def _grid(**axes: list[Any]) -> list[dict[str, Any]]:
    return [dict(zip(axes, v, strict=True)) for v in itertools.product(*axes.values())]


GRIDS: dict[str, list[dict[str, Any]]] = {
    "sma_cross": [p for p in _grid(fast=[5, 10, 20], slow=[20, 40]) if p["fast"] < p["slow"]],
    "ema_cross": _grid(fast=[5, 10], slow=[20, 40], short=[False, True]),
    "rsi_reversion": _grid(period=[7, 14], lower=[25.0, 30.0], upper=[70.0, 75.0]),
    "macd_trend": _grid(fast=[8, 12], slow=[26, 30], signal=[5, 9]),
    "bollinger_breakout": _grid(period=[10, 20], nbdev=[1.5, 2.0, 2.5]),
    "atr_stops": _grid(
        ema_period=[20, 50], atr_period=[7, 14], atr_mult=[2.0], tp_mult=[0.0, 3.0], trail=[True]
    )
    + _grid(ema_period=[20], atr_period=[14], atr_mult=[1.5, 2.0], tp_mult=[0.0], trail=[False]),
}


@pytest.fixture(scope="module")
def bars() -> trials_mod.BarArrays:
    return random_arrays(3000, seed=11)


def _same_signals(a: Signals, b: Signals) -> bool:
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if (x is None) != (y is None):
                return False
        elif not np.array_equal(x, y, equal_nan=True):
            return False
    return True


class UserCross(Strategy):
    """A user strategy: nested indicators, a temporary input and a tuple-valued indicator."""

    name = "user_cross"
    params = (
        Param("fast", "int", 5, low=2, high=100),
        Param("slow", "int", 20, low=3, high=200),
        Param("band", "int", 10, low=2, high=100),
    )

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        fast = ta.ema(ta.sma(bars.close, params["fast"]), 3)  # input: a cached output
        slow = ta.sma(bars.close * 1.0, params["slow"])  # input: a temporary, never cached
        upper, middle, _ = ta.bbands(bars.close, params["band"], 2.0, 2.0)
        return Signals(
            ta.crossed_above(fast, slow) | ta.crossed_above(bars.close, upper),
            ta.crossed_below(fast, slow) | ta.crossed_below(bars.close, middle),
        )


class Scribbler(UserCross):
    """Writes into an indicator output, which a batch hands out read-only."""

    name = "scribbler"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        fast = ta.sma(bars.close, params["fast"])
        slow = ta.sma(bars.close, params["slow"])
        fast[: params["band"]] = np.nan  # in place: fine alone, read-only in a batch
        return Signals(ta.crossed_above(fast, slow), ta.crossed_below(fast, slow))


USER_GRID = _grid(fast=[3, 5], slow=[20, 30], band=[10, 15])


def _check_batch_equals_alone(
    strategy: Strategy, grid: list[dict[str, Any]], bars: trials_mod.BarArrays
) -> None:
    grid = [strategy.validate_params(p) for p in z_order(grid)]
    batch = run_trials(grid, bars, strategy, trial_config())
    assert [r.status for r in batch] == [OK] * len(grid)
    for params, r in zip(grid, batch, strict=True):
        alone = run_trials([params], bars, strategy, trial_config())[0]
        assert r.same_outcome(alone), params
    # the signals themselves, trial by trial in one cache against the plain strategy
    with indicator_cache() as cache:
        trusted = cache.trust_bars(bars)
        in_batch = [signals_in_batch(strategy, trusted, p, bars) for p in grid]
    for params, sig in zip(grid, in_batch, strict=True):
        assert _same_signals(sig, run_signals(strategy, bars, params)), params


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_builtin_strategy_gives_the_same_results_in_a_batch(
    name: str, bars: trials_mod.BarArrays
) -> None:
    _check_batch_equals_alone(get_strategy(name), GRIDS[name], bars)


@pytest.mark.parametrize("strategy", [UserCross(), Scribbler()], ids=["user", "scribbler"])
def test_user_strategies_give_the_same_results_in_a_batch(
    strategy: Strategy, bars: trials_mod.BarArrays
) -> None:
    _check_batch_equals_alone(strategy, USER_GRID, bars)


def test_builtin_strategies_reuse_their_indicators(bars: trials_mod.BarArrays) -> None:
    strategy = get_strategy("ema_cross")
    grid = GRIDS["ema_cross"]
    with indicator_cache() as cache:
        trusted = cache.trust_bars(bars)
        for p in grid:
            signals_in_batch(strategy, trusted, strategy.validate_params(p), bars)
    # the EMAs of 5, 10, 20 and 40 bars: computed at their first request (held in probation,
    # kept from the second on), served from the cache at every later one
    assert cache.misses == 4
    assert cache.hits == 2 * len(grid) - 4


def test_nothing_is_cached_outside_a_batch_and_results_stay_writable(
    bars: trials_mod.BarArrays,
) -> None:
    assert active_cache() is None
    a = ta.sma(bars.close, 10)
    b = ta.sma(bars.close, 10)
    assert a is not b
    assert a.flags.writeable


def test_the_cache_never_outlives_its_batch_nor_crosses_bars(
    bars: trials_mod.BarArrays,
) -> None:
    other = random_arrays(3000, seed=12)
    with indicator_cache() as cache:
        x = cache.trust_bars(bars)
        y = cache.trust_bars(other)
        first = ta.sma(x.close, 10)  # on probation: frozen and trusted
        assert ta.sma(x.close, 10) is first  # asked for again: kept from now on
        assert ta.sma(x.close, 10) is first  # same bars, same call: reused, read-only
        assert not first.flags.writeable
        for _ in range(3):
            np.testing.assert_array_equal(ta.sma(y.close, 10), ta.sma(other.close, 10))
            assert ta.sma(y.close, 10) is not first
        # untrusted inputs (the caller's writable arrays, temporaries) are never keys
        assert ta.sma(bars.close, 10) is not ta.sma(bars.close, 10)
    assert active_cache() is None
    assert cache.nbytes == 0
    with indicator_cache() as again:
        z = again.trust_bars(bars)
        assert ta.sma(z.close, 10) is not first
        assert ta.sma(z.close, 10) is not first
        assert again.hits == 1  # its own first result, not the earlier batch's


def test_a_writer_to_its_input_is_not_fooled() -> None:
    # a user buffer rewritten between calls keeps its identity: it must never key the cache
    buf = np.arange(100, dtype=np.float64)
    with indicator_cache() as cache:
        ta.sma(buf, 5)
        one = ta.sma(buf, 5)
        buf[:] = buf[::-1].copy()
        two = ta.sma(buf, 5)
        assert cache.hits == 0
    assert not np.array_equal(one, two, equal_nan=True)


def test_eviction_keeps_results_right_and_memory_bounded(bars: trials_mod.BarArrays) -> None:
    with indicator_cache(max_bytes=2 * bars.close.nbytes) as cache:
        x = cache.trust_bars(bars)
        for p in (5, 10, 15, 20):
            ta.sma(x.close, p)
        arrays = {p: ta.sma(x.close, p) for p in (5, 10, 15, 20)}
        assert cache.nbytes <= cache.max_bytes
        for p, arr in arrays.items():
            np.testing.assert_array_equal(ta.sma(x.close, p), arr)
        # an evicted output keys nothing: its id could go to another array once it is freed
        evicted = arrays[5]
        assert ta.ema(evicted, 3) is not ta.ema(evicted, 3)


def test_memoised_passes_out_buffers_through() -> None:
    calls: list[int] = []

    @memoised
    def double(x: np.ndarray, k: int = 2, out: np.ndarray | None = None) -> np.ndarray:
        calls.append(k)
        return np.multiply(x, k, out=out)

    with indicator_cache() as cache:
        x = cache.trust_bars(random_arrays(10, seed=1)).close
        buf = np.empty(10)
        assert double(x, out=buf) is buf
        assert double(x, out=buf) is buf
        assert calls == [2, 2]
        kept = double(x)
        assert double(x) is kept
        assert double(x) is kept
        assert calls == [2, 2, 2]


def test_wrapped_indicators_pickle_by_reference(bars: trials_mod.BarArrays) -> None:
    import pickle

    from ray import cloudpickle

    # Ray pickles user strategies by value, with the indicators they call: no cache state.
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        sma = loads(dumps(ta.sma))
        np.testing.assert_array_equal(sma(bars.close, 10), ta.sma(bars.close, 10))
    assert loads(dumps(UserCross())).signals(bars, UserCross().validate_params({})) is not None


def test_a_negative_budget_is_refused() -> None:
    from cryptoorchestrator.platform.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="max_bytes"):
        IndicatorCache(-1)


def test_stateful_strategies_are_not_reused(
    bars: trials_mod.BarArrays,
) -> None:
    seen: list[IndicatorCache | None] = []

    class Stateful(UserCross):
        name = "stateful"
        stateful_signals = True

        def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
            seen.append(active_cache())
            return super().signals(bars, params)

    res = run_trials(USER_GRID[:2], bars, Stateful(), trial_config())
    assert [r.status for r in res] == [OK, OK]
    assert seen == [None, None]


def test_probation_holds_the_last_few_first_requests_only(bars: trials_mod.BarArrays) -> None:
    from cryptoorchestrator.platform.strategy.memo import PROBATION_ENTRIES

    with indicator_cache() as cache:
        x = cache.trust_bars(bars)
        periods = list(range(2, 2 + PROBATION_ENTRIES + 1))
        first = {p: ta.sma(x.close, p) for p in periods}
        # the oldest first request left probation: computed again, no longer the same array
        assert ta.sma(x.close, periods[0]) is not first[periods[0]]
        # the newest is still there: promoted, and kept from now on
        assert ta.sma(x.close, periods[-1]) is first[periods[-1]]
        assert ta.sma(x.close, periods[-1]) is first[periods[-1]]
        assert cache.misses == len(periods) + 1
    assert cache.nbytes == 0


def test_a_batch_runs_its_trials_in_the_strategys_sweep_order(
    bars: trials_mod.BarArrays,
) -> None:
    from cryptoorchestrator.platform.optimize.trials import plan_batches, sweep_permutation

    strategy = get_strategy("macd_trend")
    assert strategy.sweep_order[:2] == ("fast", "slow")
    grid = [
        strategy.validate_params({"fast": f, "slow": s, "signal": g})
        for g in (5, 9)
        for s in (26, 30)
        for f in (8, 12)
    ]
    order = sweep_permutation(strategy, grid)
    pairs = [(grid[i]["fast"], grid[i]["slow"]) for i in order]
    assert pairs == sorted(pairs)  # trials sharing a MACD line run one after the other
    # the planner cuts batches along the same order: each batch holds whole (fast, slow) runs
    batches = plan_batches(grid, 2, strategy.sweep_order)
    assert [{(p["fast"], p["slow"]) for p in b} for b in batches] == [
        {(8, 26), (8, 30)},
        {(12, 26), (12, 30)},
    ]
