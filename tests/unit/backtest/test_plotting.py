"""The interactive candle chart over a long history: a light overview, exact candles when
zoomed in, OHLC aggregation equal to a pandas resample, and a widget that redraws the visible
window when the browser zooms, pans or resets it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryptoorchestrator.platform.backtest.plotting import (
    CandleWindow,
    WindowResampler,
    line_window,
    minmax_indices,
    ohlc_window,
    price_chart,
    window_bounds,
)

HOUR = 3_600_000
N = 58_000  # about the bundled history's length: six and a half years of hourly candles


@pytest.fixture(scope="module")
def candles() -> dict[str, np.ndarray]:
    """58,000 gap-free hourly candles of a random walk, starting at a whole hour."""
    rng = np.random.default_rng(24)
    ts = 1_500_001_200_000 // HOUR * HOUR + np.arange(N, dtype=np.int64) * HOUR
    close = 10_000 * np.exp(rng.normal(0, 0.01, N).cumsum())
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, N))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, N))
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close}


def _frame(c: dict[str, np.ndarray], part: slice = slice(None)) -> pd.DataFrame:
    index = pd.to_datetime(c["ts"][part], unit="ms")
    return pd.DataFrame({k: c[k][part] for k in ("open", "high", "low", "close")}, index=index)


def _resample_oracle(c: dict[str, np.ndarray], bars: int, part: slice) -> pd.DataFrame:
    """pandas' OHLC resample into candles of ``bars`` hours, bins anchored at the first bar."""
    df = _frame(c)
    out = df.resample(f"{bars}h", origin=df.index[0]).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last"}
    )
    return out.loc[df.index[part.start] : df.index[part.stop - 1]]


def _as_frame(w: CandleWindow) -> pd.DataFrame:
    index = pd.to_datetime(w.timestamp, unit="ms")
    return pd.DataFrame(
        {"open": w.open, "high": w.high, "low": w.low, "close": w.close}, index=index
    )


def _ohlc(c: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return c["ts"], c["open"], c["high"], c["low"], c["close"]


def test_the_overview_of_58k_candles_is_bounded_and_aggregates_like_a_resample(
    candles: dict[str, np.ndarray],
) -> None:
    w = ohlc_window(*_ohlc(candles), max_candles=5000)
    assert w.bucket == 12  # ceil(58000 / 5000)
    assert len(w.timestamp) <= 5000
    oracle = _resample_oracle(candles, 12, slice(0, N))
    pd.testing.assert_frame_equal(_as_frame(w), oracle, check_freq=False)


@pytest.mark.parametrize(("first", "last"), [(30_000, 40_000), (1_234, 21_111), (50_001, N - 1)])
def test_a_zoomed_window_over_the_limit_aggregates_on_the_global_grid(
    candles: dict[str, np.ndarray], first: int, last: int
) -> None:
    ts = candles["ts"]
    w = ohlc_window(*_ohlc(candles), start_ms=ts[first], end_ms=ts[last], max_candles=2000)
    assert w.bucket == -(-(last - first + 3) // 2000) or w.bucket == -(-(last - first + 2) // 2000)
    assert len(w.timestamp) <= 2001
    # the candles are the oracle's bins (anchored at the first bar of the whole history)
    # that cover the window: panning at one zoom level keeps the same candles
    shown = _as_frame(w)
    oracle = _resample_oracle(candles, w.bucket, slice(0, N))
    pd.testing.assert_frame_equal(shown, oracle.loc[shown.index], check_freq=False)
    assert shown.index[0] <= pd.Timestamp(ts[first], unit="ms")
    assert shown.index[-1] + pd.Timedelta(hours=w.bucket) > pd.Timestamp(ts[last], unit="ms")


def test_a_zoomed_window_under_the_limit_shows_the_exact_candles(
    candles: dict[str, np.ndarray],
) -> None:
    ts = candles["ts"]
    start, end = ts[40_000] + HOUR // 2, ts[40_300]  # a bound inside a bar
    w = ohlc_window(*_ohlc(candles), start_ms=start, end_ms=end, max_candles=5000)
    assert w.bucket == 1
    # every bar opening in the window, and one more on each side for the edges
    part = slice(40_000, 40_302)
    pd.testing.assert_frame_equal(_as_frame(w), _frame(candles, part), check_freq=False)


def test_aggregation_counts_bars_across_gaps_like_a_groupby(
    candles: dict[str, np.ndarray],
) -> None:
    # the exchange was down: a missing day and a missing week
    keep = np.ones(N, dtype=bool)
    keep[1000:1024] = False
    keep[5000:5168] = False
    c = {k: v[keep] for k, v in candles.items()}
    n = int(keep.sum())
    w = ohlc_window(*_ohlc(c), max_candles=500)
    bucket = -(-n // 500)
    assert w.bucket == bucket
    oracle = (
        _frame(c)
        .reset_index(names="t")
        .groupby(np.arange(n) // bucket)
        .agg(t=("t", "first"), open=("open", "first"), high=("high", "max"))
        .join(
            _frame(c)
            .reset_index(drop=True)
            .groupby(np.arange(n) // bucket)
            .agg(low=("low", "min"), close=("close", "last"))
        )
        .set_index("t")
    )
    oracle.index.name = None
    pd.testing.assert_frame_equal(_as_frame(w), oracle, check_freq=False)


def test_window_bounds_and_bad_limits() -> None:
    ts = np.arange(10, dtype=np.int64) * 10
    assert window_bounds(ts, None, None) == slice(0, 10)
    assert window_bounds(ts, 25, 55) == slice(2, 7)  # 30..50 inside, 20 and 60 at the edges
    assert window_bounds(ts, -100, 1000) == slice(0, 10)
    assert window_bounds(ts, 500, 600) == slice(9, 10)  # past the end: the last bar
    with pytest.raises(ValueError, match="max_candles"):
        ohlc_window(ts, ts * 1.0, ts * 1.0, ts * 1.0, ts * 1.0, max_candles=0)


def test_line_window_keeps_every_point_when_zoomed_in_and_extremes_when_not(
    candles: dict[str, np.ndarray],
) -> None:
    ts, y = candles["ts"], candles["close"]
    full = line_window(ts, y, max_points=1000)
    assert full.size <= 1002
    assert y[full].max() == y.max()
    assert y[full].min() == y.min()
    part = line_window(ts, y, start_ms=ts[100], end_ms=ts[599], max_points=1000)
    assert np.array_equal(part, np.arange(99, 601))


def test_minmax_indices_ignore_nan_and_keep_each_buckets_extremes() -> None:
    values = np.array([1.0, np.nan, 5.0, -2.0, 3.0, 3.0, np.nan, 0.0, 9.0, 9.0, 1.0, 2.0])
    idx = minmax_indices(values, 8)  # four buckets of three
    assert idx.tolist() == [0, 2, 3, 4, 7, 8, 9, 10, 11]


def _chart(c: dict[str, np.ndarray], *, widget: bool) -> Any:
    ts, o, h, lo, cl = _ohlc(c)
    equity = 10_000 * cl / cl[0]
    drawdown = equity / np.maximum.accumulate(equity) - 1
    fills = [("buy", np.array([10, 40_100]), cl[[10, 40_100]]), ("sell", np.array([20]), cl[[20]])]
    return price_chart(
        ts,
        close=cl,
        equity=equity,
        drawdown=drawdown,
        ohlc=(o, h, lo, cl),
        fills=fills,
        symbol="BTC/USDT",
        title="t",
        max_points=4000,
        max_candles=5000,
        widget=widget,
    )


def _points(fig: Any) -> int:
    return sum(len(t.x) for t in fig.data)


def test_the_chart_of_58k_candles_carries_a_bounded_number_of_points(
    candles: dict[str, np.ndarray],
) -> None:
    fig = _chart(candles, widget=False)
    assert [t.name for t in fig.data] == [
        "candles (12 bars each)",
        "buy",
        "sell",
        "equity",
        "drawdown",
    ]
    assert len(fig.data[0].x) <= 5000
    assert _points(fig) <= 5000 + 3 + 2 * 4002
    assert len(fig.data[1].x) == 2  # every fill is drawn
    equity = fig.data[3]
    assert max(equity.y) == pytest.approx(10_000 * candles["close"].max() / candles["close"][0])


def _plotly_date(ms: int) -> str:
    """A date the way plotly.js reports an axis range: space-separated, fractional seconds."""
    return str(np.datetime64(int(ms), "ms")).replace("T", " ") + "7"


def test_the_widget_redraws_the_visible_window_at_full_detail(
    candles: dict[str, np.ndarray],
) -> None:
    fig = _chart(candles, widget=True)
    import plotly.graph_objects as go

    assert isinstance(fig, go.FigureWidget)
    assert repr(fig).startswith("<PriceChartWidget 't': candles (12 bars each)")
    overview = _points(fig)
    ts = candles["ts"]
    # the browser zoomed the bottom pane (the shared x axis) onto 200 hours: the message the
    # widget's front end sends, handled as the kernel handles it
    fig._js2py_relayout = {
        "relayout_data": {
            "xaxis3.range[0]": _plotly_date(ts[40_000]),
            "xaxis3.range[1]": _plotly_date(ts[40_199]),
            "lastInputTime": 1,
        },
        "source_view_id": "view-1",
    }
    shown = fig.data[0]
    assert shown.name == "candles"
    # the bars opening in the window, and the one after it (the one before opens before
    # the window's first bound and is drawn too, as its left edge)
    part = slice(40_000, 40_201)
    for field in ("open", "high", "low", "close"):
        assert np.array_equal(np.asarray(getattr(shown, field)), candles[field][part])
    assert np.array_equal(np.asarray(shown.x), ts[part].astype("datetime64[ms]"))
    assert len(fig.data[3].x) == 201  # equity: every point of the window
    assert _points(fig) < overview
    # a pan to a wide window aggregates again; the fills are never thinned
    fig.plotly_relayout(
        {"xaxis.range[0]": _plotly_date(ts[1_000]), "xaxis.range[1]": _plotly_date(ts[31_000])}
    )
    assert fig.data[0].name == "candles (7 bars each)"
    assert len(fig.data[0].x) <= 5001
    assert len(fig.data[1].x) == 2
    # a double click resets the axes: the overview again
    fig.plotly_relayout({"xaxis3.autorange": True})
    assert fig.data[0].name == "candles (12 bars each)"
    assert _points(fig) == overview


def test_the_resampler_redraws_a_static_figure_too(candles: dict[str, np.ndarray]) -> None:
    import plotly.graph_objects as go

    ts = candles["ts"][:100]
    fig = go.Figure([go.Scatter(), go.Candlestick()])
    r = WindowResampler(ts, max_points=10, max_candles=10)
    r.add_line(0, candles["close"][:100])
    r.add_candles(1, candles["open"][:100], candles["high"][:100], candles["low"][:100], ts * 1.0)
    r.show_window(fig, None, None)
    assert len(fig.data[1].x) == 10
    assert fig.data[1].name == "candles (10 bars each)"
    assert len(fig.data[0].y) <= 12
    r.show_window(fig, float(ts[50]), float(ts[52]))
    assert np.array_equal(np.asarray(fig.data[1].close), ts[49:54] * 1.0)
    assert r.window == (float(ts[50]), float(ts[52]))
