"""Importers: CSV (ms, s, ISO), Parquet, freqtrade feather and JSON; clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from cryptoorchestrator.platform.data.importers import read_ohlcv_file
from cryptoorchestrator.platform.errors import DataError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_COLUMNS, OHLCV_SCHEMA

Bars = Callable[..., pa.Table]


def test_freqtrade_feather(binance_1h: pa.Table, shared_data: Path) -> None:
    raw = feather.read_table(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    assert binance_1h.column_names == list(OHLCV_COLUMNS)
    assert binance_1h.num_rows == raw.num_rows == 58_419
    assert binance_1h.column("timestamp")[0].as_py() == 1_502_942_400_000  # 2017-08-17 04:00
    np.testing.assert_array_equal(
        binance_1h.column("close").to_numpy(), raw.column("close").to_numpy()
    )


def test_ftx_csv_with_iso_times(shared_data: Path) -> None:
    t = read_ohlcv_file(shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv")
    assert t.num_rows == 45_031
    assert t.column("timestamp")[0].as_py() == 1_640_991_660_000  # 2021-12-31 23:01 UTC
    assert t.slice(0, 1).to_pylist()[0]["volume"] == pytest.approx(2300413.7295)
    assert np.all(np.diff(t.column("timestamp").to_numpy()) == 60_000)


@pytest.mark.parametrize("unit", ["ms", "s", "iso", "iso_z"])
def test_csv_time_spellings(tmp_path: Path, make_bars: Bars, unit: str) -> None:
    bars = make_bars(5)
    lines = ["timestamp,open,high,low,close,volume"]
    for r in bars.to_pylist():
        ts = r["timestamp"]
        text = {
            "ms": str(ts),
            "s": str(ts // 1000),
            "iso": np.datetime_as_string(np.datetime64(ts, "ms")),
            "iso_z": np.datetime_as_string(np.datetime64(ts, "ms"), unit="s") + "Z",
        }[unit]
        lines.append(",".join([text, *(repr(r[c]) for c in OHLCV_COLUMNS[1:])]))
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + "\n")
    assert read_ohlcv_file(path).cast(OHLCV_SCHEMA).equals(bars)


def test_parquet_and_freqtrade_json(tmp_path: Path, make_bars: Bars) -> None:
    bars = make_bars(7)
    pq.write_table(bars, tmp_path / "b.parquet")
    assert read_ohlcv_file(tmp_path / "b.parquet").cast(OHLCV_SCHEMA).equals(bars)
    rows = [list(r.values()) for r in bars.to_pylist()]
    (tmp_path / "BTC_USDT-1h.json").write_text(json.dumps(rows))
    got = read_ohlcv_file(tmp_path / "BTC_USDT-1h.json")
    assert got.cast(OHLCV_SCHEMA).equals(bars)


def test_missing_values_become_nan_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp,open,high,low,close,volume\n0,1,2,0.5,1.5,\n3600000,1,2,0.5,1.5,3\n")
    t = read_ohlcv_file(path)
    assert t.num_rows == 2
    assert np.isnan(t.column("volume")[0].as_py())


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", "time,o,h,l,c,v\n1,2,3,4,5,6\n", "wrong schema"),
        ("b.csv", "timestamp,open,high,low,close,volume\n1,x,3,4,5,6\n", "unreadable|not numeric"),
        ("c.json", "{not json", "not valid JSON"),
        ("d.json", '{"a": 1}', "freqtrade JSON"),
        ("e.parquet", "garbage", "unreadable parquet"),
        ("f.feather", "garbage", "unreadable feather"),
        ("g.xlsx", "x", "unknown file type"),
    ],
)
def test_bad_files_raise_one_line_data_error(
    tmp_path: Path, name: str, content: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        read_ohlcv_file(path)
    assert "\n" not in str(info.value)
    assert name in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_ohlcv_file(tmp_path / "nope.csv")
