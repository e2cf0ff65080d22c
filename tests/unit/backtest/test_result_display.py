"""BacktestResult in a notebook: figures without pyplot or a backend switch, files only when
asked, a rich HTML display, plain-float metrics, the dataset's name, an interactive chart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cryptoorchestrator as co
from cryptoorchestrator.platform.backtest.plotting import (
    ReportFigure,
    minmax_indices,
    ohlc_buckets,
)
from cryptoorchestrator.platform.backtest.result import BacktestResult, _fmt
from cryptoorchestrator.platform.model.ohlcv import DATASET_META


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two months of the bundled BTC/USDT hourly candles, read through ``co.load_ohlcv``."""
    data_dir = tmp_path_factory.mktemp("store")
    return co.load_ohlcv(
        "binance", "BTC/USDT", "1h", start="2021-01-01", end="2021-03-01", data_dir=data_dir
    )


@pytest.fixture(scope="module")
def res(bars: Any) -> BacktestResult:
    return co.backtest("sma_cross", bars, params={"fast": 10, "slow": 50}, fee_bps=10)


def test_load_ohlcv_names_its_dataset_and_the_backtest_carries_it(
    bars: Any, res: BacktestResult
) -> None:
    meta = bars.schema.metadata
    assert meta[DATASET_META["symbol"]] == b"BTC/USDT"
    assert meta[DATASET_META["timeframe"]] == b"1h"
    assert res.symbols == ("BTC/USDT",)
    assert res.timeframe == "1h"
    assert "on BTC/USDT 1h" in repr(res)
    # an explicit symbol still wins over the table's
    other = co.backtest("sma_cross", bars, params={"fast": 10, "slow": 50}, symbol="XBT")
    assert other.symbols == ("XBT",)


def test_metrics_are_plain_floats_and_reprs_show_no_numpy(res: BacktestResult) -> None:
    assert res.metrics, "no metrics"
    assert all(type(v) is float for v in res.metrics.values())
    assert "np.float64" not in repr(res.metrics)
    assert "np." not in repr(res)
    stats = res.stats()
    assert stats["sharpe"] == res.metrics["sharpe"]


def test_repr_html_has_the_metrics_the_dataset_and_a_sparkline(res: BacktestResult) -> None:
    page = res._repr_html_()
    assert "BTC/USDT 1h" in page
    assert "<svg" in page
    assert "<polyline" in page
    for name in ("sharpe", "total_return", "max_drawdown", "trade_count"):
        assert f">{name}<" in page
        assert f">{_fmt(res.metrics[name])}<" in page
    assert "2021-01-01 00:00" in page


def test_plot_without_a_path_writes_nothing_and_returns_a_displayable_figure(
    res: BacktestResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fig = res.plot()
    assert isinstance(fig, ReportFigure)
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG")
    assert list(tmp_path.iterdir()) == []


def test_plot_with_a_path_writes_the_png_and_the_html_report(
    res: BacktestResult, tmp_path: Path
) -> None:
    res.plot(tmp_path / "out" / "report.png")
    assert (tmp_path / "out" / "report.png").read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert "BTC/USDT" in page
    res.plot(html_path=tmp_path / "only.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.html", "out"]


def test_importing_and_plotting_never_changes_the_matplotlib_backend(tmp_path: Path) -> None:
    # a fresh interpreter: the backend a user picked must survive the import, plot and display
    code = (
        "import matplotlib; matplotlib.use('pdf')\n"
        "import cryptoorchestrator as co\n"
        "from cryptoorchestrator.platform.backtest import result\n"
        "from cryptoorchestrator.platform.optimize import results\n"
        "import numpy as np\n"
        "closes = 100 + np.cumsum(np.sin(np.arange(400) / 7))\n"
        "res = co.backtest('sma_cross', closes, params={'fast': 5, 'slow': 20}, timeframe='1h')\n"
        "res.plot(); res._repr_html_(); res.plot()._repr_png_()\n"
        "print(matplotlib.get_backend())\n"
        "import sys; print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    backend, pyplot_loaded = out.stdout.split()
    assert backend == "pdf"
    assert pyplot_loaded == "False"
    assert list(tmp_path.iterdir()) == []


def test_interactive_chart_has_candles_fills_equity_and_drawdown(res: BacktestResult) -> None:
    fig = res.plot(interactive=True)
    kinds = [t.type for t in fig.data]
    names = [t.name for t in fig.data]
    assert kinds[0] == "candlestick"
    assert {"buy", "sell", "equity", "drawdown"} <= set(names)
    buys = next(t for t in fig.data if t.name == "buy")
    n_buys = int((res.orders.column("side").to_numpy(zero_copy_only=False) == "buy").sum())
    assert len(buys.x) == n_buys
    assert len(fig.data[0].x) == res.equity.size  # under the threshold: every candle


def test_interactive_chart_thins_long_histories_for_display(res: BacktestResult) -> None:
    fig = res.iplot(max_points=200, max_candles=100)
    candles = fig.data[0]
    bucket = -(-res.equity.size // 100)
    assert len(candles.x) == -(-res.equity.size // bucket)
    assert "bars each" in candles.name
    equity = next(t for t in fig.data if t.name == "equity")
    assert len(equity.y) <= 202
    # the extremes survive the thinning
    assert max(equity.y) == res.equity.max()
    assert min(equity.y) == res.equity.min()


def test_minmax_indices_keep_the_extremes_of_every_bucket() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=10_000).cumsum()
    idx = minmax_indices(values, 100)
    assert idx.size <= 102
    assert np.all(np.diff(idx) > 0)
    assert idx[0] == 0
    assert idx[-1] == values.size - 1
    for lo, hi in zip(
        np.linspace(0, 10_000, 51).astype(int)[:-1],
        np.linspace(0, 10_000, 51).astype(int)[1:],
        strict=True,
    ):
        chunk = values[lo:hi]
        assert lo + int(chunk.argmax()) in idx
        assert lo + int(chunk.argmin()) in idx
    assert np.array_equal(minmax_indices(values[:50], 100), np.arange(50))


def test_ohlc_buckets_aggregate_like_a_resample() -> None:
    ts = np.arange(7, dtype=np.int64) * 10
    o = np.array([1.0, 2, 3, 4, 5, 6, 7])
    h = o + 1
    lo = o - 1
    c = o + 0.5
    bt, bo, bh, bl, bc = ohlc_buckets(ts, o, h, lo, c, 3)
    assert bt.tolist() == [0, 30, 60]
    assert bo.tolist() == [1, 4, 7]
    assert bh.tolist() == [4, 7, 8]
    assert bl.tolist() == [0, 3, 6]
    assert bc.tolist() == [3.5, 6.5, 7.5]


def test_to_pandas_views(res: BacktestResult) -> None:
    eq = res.to_pandas()
    assert list(eq.columns) == ["equity", "drawdown"]
    assert len(eq) == res.equity.size
    assert str(eq.index.tz) == "UTC"
    assert res.trades.to_pandas().shape[0] == int(res.metrics["trade_count"])
