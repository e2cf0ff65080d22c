"""No silent time assumptions: bar interval, timestamp unit and CAGR on short runs.

Bars without timestamps used to be taken as one-minute bars (Sharpe of hourly bars x7.75),
timestamps in seconds as milliseconds (x31.6), and a short profitable run at a high frequency
made CAGR raise OverflowError. Every entry point now refuses or converts instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

import cryptoorchestrator as co
from cryptoorchestrator.cluster.optimize import optimize, walk_forward
from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.backtest.runner import run_backtest
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, periods_per_year
from cryptoorchestrator.platform.model.timestamps import (
    annualisation,
    timestamp_unit,
    timestamps_to_ms,
)
from cryptoorchestrator.platform.optimize.trials import bars_to_arrays
from cryptoorchestrator.platform.strategy.bars import Bars, as_bars
from cryptoorchestrator.platform.strategy.base import Signals, Strategy

T0_MS = 1_609_459_200_000  # 2021-01-01 UTC
HOUR_MS = 3_600_000
PARAMS = {"fast": 5, "slow": 20}
FEE = 10.0  # explicit, so that backtest and optimize compare the same runs


def _ohlcv(n: int = 2000, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    return {
        "timestamp": T0_MS + np.arange(n, dtype=np.int64) * HOUR_MS,
        "open": o,
        "high": np.maximum(o, c) * 1.003,
        "low": np.minimum(o, c) * 0.997,
        "close": c,
        "volume": np.ones(n),
    }


def _without_timestamps(data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in data.items() if k != "timestamp"}


@pytest.fixture(scope="module")
def hourly() -> dict[str, np.ndarray]:
    return _ohlcv()


@pytest.fixture(scope="module")
def reference_sharpe(hourly: dict[str, np.ndarray]) -> float:
    return float(co.backtest("sma_cross", hourly, PARAMS, fee_bps=FEE).metrics["sharpe"])


# ---------------------------------------------------------------- bars without timestamps


@pytest.mark.parametrize("form", ["dict", "closes", "array"])
def test_bars_without_timestamps_need_a_timeframe(hourly: dict[str, np.ndarray], form: str) -> None:
    data: Any = {
        "dict": _without_timestamps(hourly),
        "closes": hourly["close"],
        "array": np.column_stack([hourly[k] for k in ("open", "high", "low", "close", "volume")]),
    }[form]
    with pytest.raises(InvalidInputError) as info:
        co.backtest("sma_cross", data, PARAMS, fee_bps=FEE)
    assert info.value.field == "timeframe"
    assert info.value.allowed == ", ".join(TIMEFRAMES)
    with pytest.raises(InvalidInputError, match="timeframe"):
        as_bars(data)
    with pytest.raises(InvalidInputError, match="timeframe"):
        co.check_lookahead("sma_cross", data, PARAMS)
    assert co.check_lookahead("sma_cross", data, PARAMS, timeframe="1h").ok


def test_hourly_bars_without_timestamps_annualise_as_hourly_with_the_timeframe(
    hourly: dict[str, np.ndarray], reference_sharpe: float
) -> None:
    res = co.backtest("sma_cross", _without_timestamps(hourly), PARAMS, fee_bps=FEE, timeframe="1h")
    # Formerly taken as 1-minute bars: Sharpe x sqrt(60) = x7.75.
    assert res.metrics["sharpe"] == reference_sharpe
    assert res.timeframe == "1h"
    np.testing.assert_array_equal(np.diff(res.timestamp), HOUR_MS)


def test_a_timeframe_that_contradicts_the_spacing_is_refused(
    hourly: dict[str, np.ndarray],
) -> None:
    with pytest.raises(InvalidInputError, match="'1m' is 60000 ms but the bars are") as info:
        co.backtest("sma_cross", hourly, PARAMS, fee_bps=FEE, timeframe="1m")
    assert info.value.field == "timeframe"
    assert info.value.allowed == "1h"
    with pytest.raises(InvalidInputError, match="unknown timeframe"):
        co.backtest("sma_cross", hourly, PARAMS, fee_bps=FEE, timeframe="60m")


def test_run_backtest_refuses_bars_it_cannot_annualise(
    hourly: dict[str, np.ndarray], reference_sharpe: float
) -> None:
    # Bars built by hand (not through as_bars) with bar numbers for timestamps.
    n = len(hourly["close"])
    numbered = Bars(
        np.arange(n, dtype=np.int64),
        hourly["open"],
        hourly["high"],
        hourly["low"],
        hourly["close"],
        hourly["volume"],
    )
    with pytest.raises(InvalidInputError) as info:
        run_backtest(co.get_strategy("sma_cross"), numbered, PARAMS)
    assert info.value.field == "timeframe"
    cfg = SimConfig(fee_bps=FEE)
    res = run_backtest(co.get_strategy("sma_cross"), numbered, PARAMS, config=cfg, timeframe="1h")
    assert res.metrics["sharpe"] == reference_sharpe


# ----------------------------------------------------------------------- timestamp units


@pytest.mark.parametrize(
    ("unit", "convert"),
    [
        ("s", lambda ms: ms // 1000),
        ("s", lambda ms: ms / 1000.0),
        ("ms", lambda ms: ms),
        ("us", lambda ms: ms * 1000),
        ("ns", lambda ms: ms * 1_000_000),
        ("ns", lambda ms: ms.astype("datetime64[ms]").astype("datetime64[ns]")),
        ("s", lambda ms: ms.astype("datetime64[ms]").astype("datetime64[s]")),
    ],
)
def test_timestamps_in_any_unit_become_ms(
    hourly: dict[str, np.ndarray], reference_sharpe: float, unit: str, convert: Any
) -> None:
    raw = convert(hourly["timestamp"])
    if raw.dtype.kind != "M":
        assert timestamp_unit(raw) == unit
    data = {**hourly, "timestamp": raw}
    bars = as_bars(data)
    np.testing.assert_array_equal(bars.timestamp, hourly["timestamp"])
    # Seconds read as ms were formerly 1000x too dense: Sharpe x sqrt(1000) = x31.6.
    assert co.backtest("sma_cross", data, PARAMS, fee_bps=FEE).metrics["sharpe"] == reference_sharpe
    np.testing.assert_array_equal(bars_to_arrays(data).timestamp, hourly["timestamp"])


def test_pandas_dates_and_index_are_ms(hourly: dict[str, np.ndarray]) -> None:
    dates = pd.to_datetime(hourly["timestamp"], unit="ms", utc=True)
    df = pd.DataFrame(_without_timestamps(hourly), index=dates)
    np.testing.assert_array_equal(as_bars(df).timestamp, hourly["timestamp"])
    df2 = pd.DataFrame({**_without_timestamps(hourly), "date": dates})
    np.testing.assert_array_equal(as_bars(df2).timestamp, hourly["timestamp"])


@pytest.mark.parametrize(
    "values",
    [
        np.arange(100, dtype=np.int64),  # bar numbers
        np.arange(100, dtype=np.int64) * HOUR_MS,  # hourly ms counted from 1970-01-01
        np.arange(100, dtype=np.int64) + 10**17,  # 1973 in ns, year ~5000 in us
    ],
)
def test_timestamps_that_are_no_dates_are_refused(
    hourly: dict[str, np.ndarray], values: np.ndarray
) -> None:
    data = {k: v[:100] for k, v in hourly.items()}
    data["timestamp"] = values
    for build in (as_bars, bars_to_arrays):
        with pytest.raises(InvalidInputError, match="not dates between 1990 and 2100") as info:
            build(data)
        assert info.value.field == "bars.timestamp"


def test_a_stray_value_among_dates_is_named_by_row() -> None:
    ts = T0_MS + np.arange(50, dtype=np.int64) * HOUR_MS
    ts[7] = 0
    with pytest.raises(InvalidInputError, match="1 values are not dates") as info:
        timestamps_to_ms(ts)
    assert info.value.rows == [7]
    with pytest.raises(InvalidInputError, match="missing values") as info:
        timestamps_to_ms(np.r_[ts[:3].astype(float), np.nan])
    assert info.value.rows == [3]


def test_annualisation_is_24_7_from_the_interval() -> None:
    ts = T0_MS + np.arange(10, dtype=np.int64) * HOUR_MS
    assert annualisation(ts, None) == 8760.0 == periods_per_year("1h")
    assert annualisation(ts, "1h") == 8760.0
    assert annualisation(T0_MS + np.arange(10) * 86_400_000, None) == 365.0
    # A 90-minute spacing is no exchange timeframe but still annualises from the data.
    assert annualisation(T0_MS + np.arange(10) * 5_400_000, None) == 5840.0
    with pytest.raises(InvalidInputError, match="fewer than 2 bars") as info:
        annualisation(ts[:1], None)
    assert info.value.field == "timeframe"
    with pytest.raises(InvalidInputError, match="look like s") as info:
        annualisation(ts // 1000, None)
    assert info.value.field == "bars.timestamp"


# ------------------------------------------------------------------------------------ CAGR


def _stats(n_bars: int, final: float) -> np.ndarray:
    stats = np.zeros(nb.N_STATS)
    stats[nb.S_BARS] = n_bars
    stats[nb.S_FINAL_EQUITY] = final
    stats[nb.S_MAX_DD] = 0.01
    return stats


def test_cagr_of_a_short_high_frequency_run_is_inf_not_overflow() -> None:
    # +10% over 60 one-second bars: (1.1) ** 525600 - 1 overflowed with OverflowError.
    m = metrics_from_stats(_stats(60, 11_000.0), 10_000.0, periods_per_year("1s"))
    assert m["cagr"] == math.inf
    assert m["calmar"] == math.inf
    assert m["total_return"] == pytest.approx(0.1)
    # Below the float range the value is the plain compound rate, unchanged.
    m = metrics_from_stats(_stats(8760, 11_000.0), 10_000.0, 8760.0)
    assert m["cagr"] == pytest.approx(0.1, rel=1e-12)
    m = metrics_from_stats(_stats(60, 9_000.0), 10_000.0, periods_per_year("1s"))
    assert m["cagr"] == -1.0  # a loss compounded over a year of seconds: all gone
    m = metrics_from_stats(_stats(60, 0.0), 10_000.0, periods_per_year("1s"))
    assert m["cagr"] == -1.0


class _LongFromTheStart(Strategy):
    name = "long_from_the_start"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        entries = np.zeros(len(bars.close), dtype=np.bool_)
        entries[0] = True
        return Signals(entries, np.zeros_like(entries))


def test_backtest_of_a_minute_of_second_bars_does_not_raise() -> None:
    n = 60
    close = 100.0 * 1.002 ** np.arange(n)
    data = {"timestamp": T0_MS + np.arange(n) * 1000, "close": close}
    res = co.backtest(_LongFromTheStart, data, fill="close")
    assert res.metrics["total_return"] > 0.1
    assert res.metrics["cagr"] == math.inf
    assert res.timeframe == "1s"


# ------------------------------------------------------------------ optimize and walk-forward


def test_optimize_and_walk_forward_need_a_timeframe_without_timestamps(
    hourly: dict[str, np.ndarray],
) -> None:
    data = _without_timestamps(hourly)
    kwargs: dict[str, Any] = {"executor": "serial", "store": False, "progress": False}
    with pytest.raises(InvalidInputError) as info:
        optimize("sma_cross", data, space={"fast": [5], "slow": [20]}, **kwargs)
    assert info.value.field == "timeframe"
    assert info.value.allowed == ", ".join(TIMEFRAMES)
    with pytest.raises(InvalidInputError, match="timeframe"):
        walk_forward("sma_cross", data, space={"fast": [5], "slow": [20]}, n_folds=2, **kwargs)
    with pytest.raises(InvalidInputError, match="timeframe"):
        bars_to_arrays(data)


def test_optimize_annualises_like_backtest(
    hourly: dict[str, np.ndarray], reference_sharpe: float
) -> None:
    kwargs: dict[str, Any] = {"executor": "serial", "store": False, "progress": False}
    kwargs["fee_bps"] = FEE
    space = {"fast": [5], "slow": [20]}
    seconds = {**hourly, "timestamp": hourly["timestamp"] // 1000}
    runs = [
        optimize("sma_cross", hourly, space=space, **kwargs),
        optimize("sma_cross", seconds, space=space, **kwargs),
        optimize("sma_cross", _without_timestamps(hourly), space=space, timeframe="1h", **kwargs),
    ]
    for res in runs:
        assert res.config.periods_per_year == 8760.0
        assert res.best_value == pytest.approx(reference_sharpe, rel=1e-12)
    with pytest.raises(InvalidInputError, match="'1d' is") as info:
        optimize("sma_cross", hourly, space=space, timeframe="1d", **kwargs)
    assert info.value.field == "timeframe"
