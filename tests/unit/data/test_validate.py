"""Validation: bad rows with reasons, gaps with ranges, outliers, explicit gap filling."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.data.times import to_ms
from cryptoorchestrator.platform.data.validate import fill_gaps, find_gaps, validate_ohlcv
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

HOUR = 3_600_000
Bars = Callable[..., pa.Table]


def test_real_binance_1h_has_exactly_28_gaps_longest_34h_feb_2018(binance_1h: pa.Table) -> None:
    rep = validate_ohlcv(binance_1h, "1h")
    assert rep.rows == 58_419
    assert rep.ok
    assert rep.good.num_rows == 58_419
    assert len(rep.gaps) == 28
    longest = rep.longest_gap
    assert longest is not None
    assert longest.span_ms == 34 * HOUR
    assert longest.missing == 33
    assert longest.after == to_ms("2018-02-08T00:00")
    assert (longest.start, longest.end) == (to_ms("2018-02-08T01:00"), to_ms("2018-02-09T10:00"))
    assert str(longest) == "2018-02-08 01:00 .. 2018-02-09 10:00 (33 candles missing)"
    # validation never alters a good row
    assert rep.good.equals(binance_1h.cast(OHLCV_SCHEMA))


def _with(table: pa.Table, row: int, **values: float) -> pa.Table:
    for name, value in values.items():
        col = table.column(name).to_numpy().copy()
        col[row] = value
        i = table.column_names.index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(col))
    return table


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"close": float("nan")}, "missing or non-finite"),
        ({"open": -1.0}, "price not positive"),
        ({"low": 0.0}, "price not positive"),
        ({"volume": -0.5}, "negative volume"),
        ({"high": 1.0, "low": 2.0}, "high below low"),
        ({"low": 1e9, "high": 2e9}, "low above open or close"),
        ({"high": 1.0, "low": 0.5}, "high below open or close"),
        ({"timestamp": 1_609_459_200_000 + 10 * HOUR + 60_000}, "timestamp off the 1h grid"),
    ],
)
def test_each_rule_quarantines_the_row_with_its_reason(
    make_bars: Bars, change: dict[str, float], reason: str
) -> None:
    bars = make_bars(50)
    bad_bars = _with(bars, 10, **change)
    rep = validate_ohlcv(bad_bars, "1h")
    assert rep.reasons() == {reason: 1}
    assert rep.good.num_rows == 49
    # the bad row is kept exactly as received
    bad_row = rep.bad.drop_columns(["reason"]).to_pylist()[0]
    expected = bad_bars.slice(10, 1).to_pylist()[0]
    assert {k: v for k, v in bad_row.items() if v == v} == {
        k: v for k, v in expected.items() if v == v
    }


def test_duplicates_and_unsorted_rows(make_bars: Bars) -> None:
    bars = make_bars(20)
    shuffled = pa.concat_tables([bars.slice(10), bars.slice(0, 10), bars.slice(5, 1)])
    rep = validate_ohlcv(shuffled, "1h")
    assert rep.out_of_order == 2  # steps back at 19 -> 0 and at 9 -> 5
    assert rep.reasons() == {"duplicate timestamp": 1}
    assert rep.good.equals(bars)


def test_nulls_in_input_are_quarantined(make_bars: Bars) -> None:
    bars = make_bars(5)
    nullable = pa.table({c: bars.column(c) for c in bars.column_names})
    vol = pa.array([1.0, None, 2.0, 3.0, 4.0])
    rep = validate_ohlcv(nullable.set_column(5, "volume", vol), "1h")
    assert rep.reasons() == {"missing or non-finite": 1}


def test_spike_and_wick_outliers(make_bars: Bars) -> None:
    bars = make_bars(100)
    c = float(bars.column("close")[40].as_py())
    spiked = _with(bars, 41, open=c, close=c * 11, high=c * 11, low=c)  # a 1,000 % bad tick
    spiked = _with(spiked, 42, open=c * 11, high=c * 11)
    wick = _with(bars, 70, high=float(bars.column("high")[70].as_py()) * 3)
    rep = validate_ohlcv(pa.concat_tables([spiked.slice(0, 60), wick.slice(60)]), "1h")
    assert rep.reasons() == {"outlier spike": 1, "outlier wick": 1}
    assert set(rep.bad.column("timestamp").to_pylist()) == {
        bars.column("timestamp")[i].as_py() for i in (41, 70)
    }
    # a large one-way move (a real crash) is not an outlier
    crash = make_bars(50)
    closes = crash.column("close").to_numpy().copy()
    closes[25:] *= 0.7
    opens = np.concatenate(([closes[0]], closes[:-1]))
    crash = _with(crash, 0)  # no-op copy
    crash = crash.set_column(1, "open", pa.array(opens)).set_column(4, "close", pa.array(closes))
    crash = crash.set_column(2, "high", pa.array(np.maximum(opens, closes)))
    crash = crash.set_column(3, "low", pa.array(np.minimum(opens, closes)))
    assert validate_ohlcv(crash, "1h").ok
    with pytest.raises(InvalidInputError, match="max_jump"):
        validate_ohlcv(crash, "1h", max_jump=0)


def test_find_gaps_and_fill_gaps_is_explicit(make_bars: Bars) -> None:
    bars = make_bars(30)
    keep = np.ones(30, bool)
    keep[[5, 6, 7, 20]] = False
    holed = bars.filter(pa.array(keep))
    gaps = find_gaps(holed.column("timestamp").to_numpy(), "1h")
    assert [(g.missing, g.span_ms) for g in gaps] == [(3, 4 * HOUR), (1, 2 * HOUR)]
    assert validate_ohlcv(holed, "1h").good.num_rows == 26  # validation does not fill
    filled, n = fill_gaps(holed, "1h")
    assert n == 4
    assert filled.column("timestamp").equals(bars.column("timestamp"))
    row = filled.slice(5, 1).to_pylist()[0]
    prev_close = holed.column("close")[4].as_py()
    assert row["open"] == row["high"] == row["low"] == row["close"] == prev_close
    assert row["volume"] == 0.0
    assert fill_gaps(bars, "1h") == (bars, 0)


def test_weekly_grid_opens_on_monday(make_bars: Bars) -> None:
    monday = to_ms("2024-01-01")  # a Monday, like Binance's weekly candles
    rep = validate_ohlcv(make_bars(10, start=monday, tf_ms=7 * 86_400_000), "1w")
    assert rep.ok
    assert rep.gaps == []
