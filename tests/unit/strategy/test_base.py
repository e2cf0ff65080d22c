"""Param validation, the guard, bar validation and the look-ahead checker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.errors import InvalidInputError, StrategyError
from cryptoorchestrator.platform.strategy.bars import as_bars
from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy, run_signals
from cryptoorchestrator.platform.strategy.lookahead import check_lookahead


class Demo(Strategy):
    name = "demo"
    params = (
        Param("period", "int", 5, low=2, high=50),
        Param("k", "float", 1.5, low=0.5, high=3.0),
        Param("side", "choice", "long", choices=("long", "short")),
        Param("flag", "bool", False),
    )

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        c = np.asarray(bars.close)
        up = np.r_[False, c[1:] > c[:-1]]
        return Signals(up, ~up)


class Peeking(Demo):
    name = "peeking"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        c = np.asarray(bars.close)
        nxt = np.r_[c[1:] > c[:-1], False]  # tomorrow's move: look-ahead
        return Signals(nxt, ~nxt)


class Broken(Demo):
    name = "broken"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        raise ZeroDivisionError("oops")


# 2021-01-01 UTC in ms: timestamps must be dates (1990-2100) in some unit.
T0 = 1_609_459_200_000


def _bars(n: int = 300) -> Any:
    rng = np.random.default_rng(0)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return as_bars(
        {
            "timestamp": T0 + np.arange(n) * 60_000,
            "open": c,
            "high": c * 1.01,
            "low": c * 0.99,
            "close": c,
            "volume": np.ones(n),
        }
    )


def test_validate_params_fills_defaults_and_converts() -> None:
    out = Demo().validate_params({"period": "7", "flag": "true", "k": 2})
    assert out == {"period": 7, "k": 2.0, "side": "long", "flag": True}


@pytest.mark.parametrize(
    ("params", "field", "allowed"),
    [
        ({"period": 1}, "params.period", "int in [2, 50]"),
        ({"period": 2.5}, "params.period", "int in [2, 50]"),
        ({"k": float("nan")}, "params.k", "float in [0.5, 3.0]"),
        ({"side": "both"}, "params.side", "'long', 'short'"),
        ({"flag": "maybe"}, "params.flag", "true, false"),
        ({"nope": 1}, "params.nope", "period, k, side, flag"),
    ],
)
def test_bad_params_name_field_and_allowed(params: dict, field: str, allowed: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        Demo().validate_params(params)
    assert err.value.field == field
    assert err.value.allowed == allowed


def test_guard_turns_exceptions_into_strategy_error() -> None:
    with pytest.raises(StrategyError) as err:
        run_signals(Broken(), _bars(), {"period": 3})
    assert err.value.strategy == "broken"
    assert err.value.params == {"period": 3}
    assert isinstance(err.value.cause, ZeroDivisionError)


def test_guard_rejects_wrong_length_signals() -> None:
    class Short(Demo):
        name = "short"

        def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
            return Signals(np.zeros(3, bool), None)

    with pytest.raises(StrategyError, match="long_entries"):
        run_signals(Short(), _bars(), {})


def test_lookahead_passes_causal_and_names_first_bad_bar() -> None:
    bars = _bars()
    ok = check_lookahead(Demo(), bars, Demo().validate_params({}))
    assert ok.ok
    assert ok.first_bad_bar is None
    assert len(ok.checked_cuts) >= 10
    bad = check_lookahead(Peeking(), bars, {})
    assert not bad.ok
    # a prefix ending at bar t lacks bar t+1, so it sees no rise there: the first bar flagged
    # is the first one followed by a rise
    c = bars.close
    first = int(np.flatnonzero(c[1:] > c[:-1])[0])
    assert bad.first_bad_bar == first
    assert bad.signal in ("long_entries", "long_exits")
    assert bad.timestamp == int(bars.timestamp[first])
    assert f"LOOK-AHEAD at bar {first}" in str(bad)


@pytest.mark.parametrize(
    ("mutate", "field", "row"),
    [
        (lambda d: d["close"].__setitem__(7, np.nan), "bars.open/high/low/close", 7),
        (lambda d: d["low"].__setitem__(3, -1.0), "bars.open/high/low/close", 3),
        (lambda d: d["timestamp"].__setitem__(5, d["timestamp"][4]), "bars.timestamp", 5),
        (lambda d: d["timestamp"].__setitem__(9, 0), "bars.timestamp", 9),
        (lambda d: d["volume"].__setitem__(2, -5.0), "bars.volume", 2),
        (lambda d: d["high"].__setitem__(4, 0.5), "bars.high", 4),
    ],
)
def test_bad_bars_name_field_and_rows(mutate: Any, field: str, row: int) -> None:
    n = 20
    data = {
        "timestamp": T0 + np.arange(n) * 60_000,
        "open": np.full(n, 10.0),
        "high": np.full(n, 11.0),
        "low": np.full(n, 9.0),
        "close": np.full(n, 10.0),
        "volume": np.ones(n),
    }
    mutate(data)
    with pytest.raises(InvalidInputError) as err:
        as_bars(data)
    assert err.value.field == field
    assert row in err.value.rows


def test_missing_columns_and_empty_data() -> None:
    with pytest.raises(InvalidInputError, match="missing column 'close'"):
        as_bars({"open": np.ones(3)})
    with pytest.raises(InvalidInputError, match="missing columns"):
        as_bars({"open": np.ones(3), "close": np.ones(3)})
    with pytest.raises(InvalidInputError, match="no bars"):
        as_bars(np.array([], dtype=float))


def test_accepts_table_dataframe_freqtrade_and_arrays() -> None:
    n = 5
    ts = T0 + np.arange(n, dtype=np.int64) * 3_600_000
    cols = {
        "timestamp": ts,
        "open": np.arange(1.0, 6),
        "high": np.arange(2.0, 7),
        "low": np.arange(0.5, 5.5),
        "close": np.arange(1.5, 6.5),
        "volume": np.ones(n),
    }
    a = as_bars(pa.table(cols))
    df = pd.DataFrame({**cols, "date": pd.to_datetime(ts, unit="ms", utc=True)}).drop(
        columns="timestamp"
    )
    b = as_bars(df)
    c = as_bars(np.column_stack([cols[k] for k in cols]))
    for bars in (a, b, c):
        np.testing.assert_array_equal(bars.timestamp, ts)
        np.testing.assert_array_equal(bars.close, cols["close"])
    closes = as_bars(np.arange(1.0, 4.0), timeframe="1h")
    np.testing.assert_array_equal(closes.open, closes.close)
    np.testing.assert_array_equal(closes.timestamp, np.arange(3) * 3_600_000)
    assert a.to_table().equals(pa.table(cols).cast(a.to_table().schema))


def test_signals_on_a_rolling_window_equal_the_backtest_signals() -> None:
    from cryptoorchestrator.strategies.registry import get_strategy

    bars = _bars(600)
    strat = get_strategy("sma_cross")
    params = strat.validate_params({"fast": 5, "slow": 30})
    full = run_signals(strat, bars, params)
    window = 120
    hits = 0
    for t in range(window, len(bars)):
        last = run_signals(strat, bars.slice(t - window + 1, t + 1), params)
        got = (bool(last.long_entries[-1]), bool(last.long_exits[-1]))
        assert got == (bool(full.long_entries[t]), bool(full.long_exits[t]))
        hits += got[0] or got[1]
    assert hits > 5
