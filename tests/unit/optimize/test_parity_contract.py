"""One evaluation contract: optimizer trials and walk-forward windows == ``co.backtest``, exactly.

For every built-in strategy, with no stops, each ``SimConfig`` stop, a strategy's own class stop
and (``atr_stops``) its per-bar ATR stops, long-only and with shorts, on generated and real
candles: a trial's metrics are the backtest's floats, through the serial executor and on Ray; a
walk-forward fold's out-of-sample metrics and equity are those of a backtest of the chosen
parameters on the fold's bars with the train window as warm-up.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from _strategy import SmaCross, random_bars

import cryptoorchestrator as co
from cryptoorchestrator.cluster.optimize import optimize, walk_forward
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.evaluate import (
    decision_at,
    engine_inputs,
    evaluate,
    resolve_stops,
)
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.optimize.trials import OK, bars_to_arrays
from cryptoorchestrator.platform.strategy.base import Signals, Strategy, run_signals
from cryptoorchestrator.strategies.registry import get_strategy, list_strategies

#: A few parameter points per built-in strategy (a small grid; ``short`` where supported).
SPACES: dict[str, dict[str, list[Any]]] = {
    "sma_cross": {"fast": [5, 10], "slow": [20, 50]},
    "ema_cross": {"fast": [5, 12], "slow": [26, 40], "short": [False, True]},
    "rsi_reversion": {"period": [7, 14], "lower": [30.0], "upper": [65.0, 70.0]},
    "macd_trend": {"fast": [8, 12], "slow": [26], "signal": [5, 9]},
    "bollinger_breakout": {"period": [15, 20], "nbdev": [1.5, 2.0]},
    "atr_stops": {
        "ema_period": [20, 50],
        "atr_mult": [1.5, 3.0],
        "tp_mult": [0.0, 4.0],
        "trail": [False, True],
    },
}

#: Stops: none, each ``SimConfig`` stop, or a class default on the strategy itself ("class").
STOPS: dict[str, dict[str, Any]] = {
    "none": {},
    "stop_loss": {"stop_loss": 0.03},
    "take_profit": {"take_profit": 0.05},
    "trailing": {"trailing_stop": 0.04},
    "class": {},
}


def test_every_builtin_strategy_is_covered() -> None:
    builtins = {
        name
        for name in list_strategies()
        if type(get_strategy(name)).__module__.startswith("cryptoorchestrator.strategies.")
    }
    assert set(SPACES) == builtins


def _generated() -> dict[str, np.ndarray]:
    return random_bars(3000, seed=5)


@pytest.fixture(params=["generated", "real"])
def bars(request: pytest.FixtureRequest) -> Any:
    if request.param == "generated":
        return _generated()
    return request.getfixturevalue("candles")


def _strategy(name: str, stops: str) -> Strategy:
    strat = get_strategy(name)
    if stops == "class":
        # A class default stop, as a user strategy declares one: trials must honour it too.
        cls = type(f"{type(strat).__name__}WithStop", (type(strat),), {"stop_loss": 0.025})
        return cls()
    return strat


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal keys and equal floats (NaN equals NaN): the same numbers, not close ones."""

    def eq(x: float, y: float) -> bool:
        return (math.isnan(x) and math.isnan(y)) or x == y

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


def _window(bars: Any, start: int, stop: int) -> Any:
    if isinstance(bars, pa.Table):
        return bars.slice(start, stop - start)
    return {k: v[start:stop] for k, v in bars.items()}


def _sim(stops: str, allow_short: bool) -> SimConfig:
    return SimConfig(fee_bps=10.0, allow_short=allow_short, **STOPS[stops])


@pytest.mark.parametrize("allow_short", [False, True], ids=["long_only", "shorts"])
@pytest.mark.parametrize("stops", list(STOPS))
@pytest.mark.parametrize("name", list(SPACES))
def test_serial_trials_equal_backtests(name: str, stops: str, allow_short: bool, bars: Any) -> None:
    strat = _strategy(name, stops)
    sim = _sim(stops, allow_short)
    res = optimize(
        strat, bars, space=SPACES[name], sim_config=sim, executor="serial", store=False,
        progress=False,
    )  # fmt: skip
    assert res.status == "succeeded"
    ok = [t for t in res.trials if t.status == OK]
    assert len(ok) == len(res.trials) > 1
    traded = 0
    for trial in ok:
        expected = co.backtest(strat, bars, trial.params, config=sim).metrics
        assert trial.metrics is not None
        assert _same(trial.metrics, expected), (trial.params, trial.metrics, expected)
        traded += expected["trade_count"] > 0
    assert traded  # the comparison is about trades, not empty books


@pytest.mark.ray
@pytest.mark.slow
def test_ray_trials_equal_backtests(ray_session: Any) -> None:
    bars = _generated()
    for name, stops, allow_short in [
        ("sma_cross", "class", False),
        ("ema_cross", "trailing", True),
        ("atr_stops", "none", False),
    ]:
        strat = _strategy(name, stops)
        sim = _sim(stops, allow_short)
        res = optimize(
            strat, bars, space=SPACES[name], sim_config=sim, executor="ray", store=False,
            progress=False, batch_size=2,
        )  # fmt: skip
        assert res.status == "succeeded"
        assert all(t.node for t in res.trials)  # run by Ray workers
        for trial in res.trials:
            expected = co.backtest(strat, bars, trial.params, config=sim).metrics
            assert trial.metrics is not None
            assert _same(trial.metrics, expected), (name, trial.params)


@pytest.mark.parametrize("stops", ["none", "trailing", "class"])
@pytest.mark.parametrize("name", list(SPACES))
def test_walk_forward_oos_equals_backtests_of_the_chosen_params(
    name: str, stops: str, bars: Any
) -> None:
    strat = _strategy(name, stops)
    sim = _sim(stops, allow_short=True)
    wf = walk_forward(
        strat, bars, space=SPACES[name], n_folds=3, mode="rolling", sim_config=sim,
        executor="serial", store=False, progress=False,
    )  # fmt: skip
    start = 0
    for fold in wf.folds:
        assert fold["params"] is not None
        # The test window, warmed up on the train window before it (as walk-forward does).
        bt = co.backtest(
            strat,
            _window(bars, fold["train_start"], fold["test_stop"]),
            fold["params"],
            config=sim,
            warmup=fold["test_start"] - fold["train_start"],
        )
        assert _same(fold["oos_metrics"], bt.metrics), (fold["fold"], fold["params"])
        n = fold["test_stop"] - fold["test_start"]
        assert bt.equity.shape == (n,)
        # The stitched curve is each fold's backtest equity scaled by the folds before it.
        piece = wf.equity[start : start + n]
        scale = piece[0] / bt.equity[0]
        np.testing.assert_allclose(piece, bt.equity * scale, rtol=1e-12)
        start += n


def test_warmup_backtest_is_the_window_evaluation() -> None:
    """``warmup`` cuts the traded part only: signals still see the warm-up bars."""
    bars = _generated()
    strat = get_strategy("atr_stops")
    params = {"ema_period": 20, "atr_mult": 1.5}
    sim = SimConfig(fee_bps=10.0)
    warm = co.backtest(strat, bars, params, config=sim, warmup=1000)
    cold = co.backtest(strat, _window(bars, 1000, 3000), params, config=sim)
    assert warm.equity.shape == cold.equity.shape == (2000,)
    assert warm.timestamp[0] == bars["timestamp"][1000]
    assert not _same(warm.metrics, cold.metrics)  # the cold run's first bars differ
    ev = evaluate(strat, bars_to_arrays(bars), params, sim, periods_per_year=8760.0, start=1000)
    assert _same(ev.metrics, warm.metrics)
    np.testing.assert_array_equal(ev.output.equity, warm.equity)
    with pytest.raises(InvalidInputError) as info:
        co.backtest(strat, bars, params, config=sim, warmup=3000)
    assert info.value.field == "warmup"


def test_atr_stops_trial_keeps_its_own_stops() -> None:
    """The issue's case: a trial dropped the strategy's per-bar ATR stops (different return)."""
    bars = _generated()
    params = {"ema_period": 20, "atr_mult": 1.5}
    sim = SimConfig(fee_bps=10.0)
    bt = co.backtest("atr_stops", bars, params, config=sim)
    res = optimize(
        "atr_stops", bars, space={"ema_period": [20], "atr_mult": [1.5]}, sim_config=sim,
        executor="serial", store=False, progress=False,
    )  # fmt: skip
    assert res.trials[0].metrics is not None
    assert res.trials[0].metrics["total_return"] == bt.metrics["total_return"]
    no_stops = co.backtest(SmaCross(), bars, {"fast": 10, "slow": 50}, config=sim)
    assert no_stops.metrics["total_return"] != bt.metrics["total_return"]


def test_stop_precedence_config_then_per_bar_then_class() -> None:
    n = 5
    per_bar = np.full(n, 0.07)
    sig = Signals(np.zeros(n, bool), None, stop_loss=per_bar, take_profit=None)
    strat = _strategy("sma_cross", "class")  # class stop_loss 0.025, nothing else
    sl, tp, tsl = resolve_stops(strat, sig, SimConfig())
    assert sl is per_bar
    assert tp is None
    assert tsl is None
    sl, _, _ = resolve_stops(strat, sig._replace(stop_loss=None), SimConfig())
    assert sl == 0.025
    sl, tp, _ = resolve_stops(strat, sig, SimConfig(stop_loss=0.01, take_profit=0.2))
    assert (sl, tp) == (0.01, 0.2)


def test_per_bar_decision_is_the_engine_input_of_that_bar() -> None:
    bars = bars_to_arrays(_generated())
    strat = get_strategy("ema_cross")
    params = strat.validate_params({"fast": 5, "slow": 20, "short": True})
    sigs = run_signals(strat, bars, params)
    assert sigs.short_entries is not None
    entries = np.flatnonzero(sigs.short_entries)
    i = int(entries[-1])
    with_shorts = decision_at(engine_inputs(strat, sigs, bars, SimConfig(trailing_stop=0.04)), i)
    assert with_shorts.short_entry
    assert with_shorts.long_exit
    assert (with_shorts.stop_loss, with_shorts.trailing_stop) == (None, 0.04)
    spot = decision_at(engine_inputs(strat, sigs, bars, SimConfig(allow_short=False)), i)
    assert not spot.short_entry
    assert spot.long_exit
    atr = get_strategy("atr_stops")
    p = atr.validate_params({"ema_period": 20, "trail": False})
    s = run_signals(atr, bars, p)
    last = decision_at(engine_inputs(atr, s, bars, SimConfig()))
    assert s.stop_loss is not None
    assert last.stop_loss == s.stop_loss[-1]
    assert last.trailing_stop is None


def test_the_optimizer_takes_strategies_only() -> None:
    class DuckTyped:
        name = "duck"
        params: tuple[()] = ()

        def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
            return Signals(None, None)

    with pytest.raises(InvalidInputError) as info:
        optimize(DuckTyped(), _generated(), space={"x": [1]}, store=False, progress=False)
    assert info.value.field == "strategy"


def test_one_fee_default_everywhere() -> None:
    from cryptoorchestrator.api.schemas import BacktestCreate
    from cryptoorchestrator.cli.backtest import backtest as cli_backtest
    from cryptoorchestrator.cli.optimize import optimize as cli_optimize
    from cryptoorchestrator.cluster.optimize import open_study

    assert DEFAULT_FEE_BPS == 10.0  # Binance spot's base taker fee
    assert SimConfig().fee_bps == DEFAULT_FEE_BPS
    for fn in (co.backtest, optimize, open_study, cli_backtest, cli_optimize):
        assert inspect.signature(fn).parameters["fee_bps"].default == DEFAULT_FEE_BPS, fn
    assert BacktestCreate.model_fields["fee_bps"].default == DEFAULT_FEE_BPS
    bars = _generated()
    params = {"fast": 10, "slow": 50}
    default = co.backtest("sma_cross", bars, params)
    assert default.config.fee_bps == DEFAULT_FEE_BPS
    assert default.metrics["fees_paid"] > 0
    res = optimize(
        "sma_cross", bars, space={"fast": [10], "slow": [50]}, executor="serial", store=False,
        progress=False,
    )  # fmt: skip
    assert res.config.sim.fee_bps == DEFAULT_FEE_BPS
    assert res.trials[0].metrics is not None
    assert _same(res.trials[0].metrics, default.metrics)
