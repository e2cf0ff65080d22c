"""Resampling 1m bars, checked against a straightforward pandas resample of the FTX file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.data.importers import read_ohlcv_file
from cryptoorchestrator.platform.data.resample import resample_ohlcv
from cryptoorchestrator.platform.errors import InvalidInputError

Bars = Callable[..., pa.Table]


@pytest.fixture(scope="module")
def ftx_1m(shared_data: Path) -> pa.Table:
    return read_ohlcv_file(shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv")


def _pandas_resample(bars: pa.Table, rule: str) -> pd.DataFrame:
    df = bars.to_pandas()
    df.index = pd.to_datetime(df["timestamp"], unit="ms", utc=True)
    agg = df.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    counts = df["close"].resample(rule).count()
    return agg[counts > 0]


@pytest.mark.parametrize(
    ("target", "rule"), [("5m", "5min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")]
)
def test_ftx_1m_resample_equals_pandas(ftx_1m: pa.Table, target: str, rule: str) -> None:
    out = resample_ohlcv(ftx_1m, "1m", target)
    ref = _pandas_resample(ftx_1m, rule)
    # The file starts at 23:01 and ends at 05:31: both edge candles are partial and dropped.
    ref = ref.iloc[1:-1]
    assert len(ref) > 20
    ts = ref.index.as_unit("ms").asi8
    np.testing.assert_array_equal(out.column("timestamp").to_numpy(), ts)
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(out.column(col).to_numpy(), ref[col].to_numpy())
    np.testing.assert_allclose(
        out.column("volume").to_numpy(), ref["volume"].to_numpy(), rtol=1e-12
    )


def test_partial_edges_and_interior_holes(make_bars: Bars) -> None:
    t0 = 1_640_995_200_000  # 2022-01-01 00:00
    bars = make_bars(185, start=t0 + 60_000, tf_ms=60_000)  # 00:01 .. 03:05
    keep = np.ones(185, bool)
    keep[100:110] = False  # a 10-minute outage inside the 01:00 candle
    holed = bars.filter(pa.array(keep))
    out = resample_ohlcv(holed, "1m", "1h")
    assert out.column("timestamp").to_pylist() == [t0 + 3_600_000, t0 + 7_200_000]
    kept = resample_ohlcv(holed, "1m", "1h", drop_partial=False)
    assert kept.num_rows == 4
    hour1 = holed.filter(
        pa.array((holed.column("timestamp").to_numpy() // 3_600_000) == t0 // 3_600_000 + 1)
    )
    assert out.column("volume")[0].as_py() == pytest.approx(sum(hour1.column("volume").to_pylist()))
    # a complete last candle is kept
    full = make_bars(120, start=t0, tf_ms=60_000)
    assert resample_ohlcv(full, "1m", "1h").num_rows == 2


def test_invalid_targets(make_bars: Bars) -> None:
    bars = make_bars(10, tf_ms=3_600_000)
    with pytest.raises(InvalidInputError, match="target"):
        resample_ohlcv(bars, "1h", "1m")
    with pytest.raises(InvalidInputError, match="target"):
        resample_ohlcv(bars, "1h", "1h")
    with pytest.raises(InvalidInputError, match="target"):
        resample_ohlcv(make_bars(10, tf_ms=7 * 86_400_000), "1w", "3d")
