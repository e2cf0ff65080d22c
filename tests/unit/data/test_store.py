"""The Parquet store: round trips, appends with dedup, atomicity, listing, bundled seeding."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.data import store as store_mod
from cryptoorchestrator.platform.data.store import OhlcvStore, load_ohlcv
from cryptoorchestrator.platform.errors import DataError, InvalidInputError, NotFoundError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

HOUR = 3_600_000
T2021 = 1_609_459_200_000  # 2021-01-01 00:00 UTC
Bars = Callable[..., pa.Table]


def test_write_read_round_trip_partitions_by_year(make_bars: Bars, tmp_path: Path) -> None:
    bars = make_bars(20_000)  # 2021-01-01 .. 2023-04: three yearly partitions
    s = OhlcvStore(tmp_path)
    res = s.write("binance", "BTC/USDT", "1h", bars)
    assert res.rows_added == 20_000
    back = s.read("binance", "BTC/USDT", "1h")
    assert back.schema == OHLCV_SCHEMA
    assert back.equals(bars)
    parts = sorted(p.name.split("-")[1] for p in (tmp_path / "binance/BTC-USDT/1h").glob("part-*"))
    assert parts == ["2021", "2022", "2023"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2021-03-01", "2022-02-01"),
        ("2021-12-31T23:00:00", None),
        (None, "2021-01-01T05:00:00Z"),
        (T2021 + 7 * HOUR + 1, T2021 + 9000 * HOUR),
    ],
)
def test_read_range_matches_a_plain_filter(
    make_bars: Bars, tmp_path: Path, start: str | int | None, end: str | int | None
) -> None:
    from cryptoorchestrator.platform.data.times import optional_ms

    bars = make_bars(20_000)
    s = OhlcvStore(tmp_path)
    s.write("binance", "BTC/USDT", "1h", bars)
    got = s.read("binance", "BTC/USDT", "1h", start, end)
    ts = bars.column("timestamp").to_numpy()
    lo, hi = optional_ms(start, field="s"), optional_ms(end, field="e")
    mask = np.ones(len(ts), bool)
    if lo is not None:
        mask &= ts >= lo
    if hi is not None:
        mask &= ts < hi
    assert got.num_rows == int(mask.sum()) > 0
    assert got.equals(bars.filter(pa.array(mask)))


def test_append_dedups_by_timestamp_and_prefers_new(make_bars: Bars, tmp_path: Path) -> None:
    s = OhlcvStore(tmp_path)
    a = make_bars(100, seed=1)
    s.write("binance", "BTC/USDT", "1h", a)
    b = make_bars(100, start=T2021 + 50 * HOUR, seed=2)
    res = s.write("binance", "BTC/USDT", "1h", b)
    assert (res.rows_added, res.overlapping) == (50, 50)
    got = s.read("binance", "BTC/USDT", "1h")
    assert got.num_rows == 150
    assert got.slice(0, 50).equals(a.slice(0, 50))
    assert got.slice(50, 100).equals(b)
    # prefer="old" keeps what was stored
    c = make_bars(10, start=T2021, seed=3)
    s.write("binance", "BTC/USDT", "1h", c, prefer="old")
    assert s.read("binance", "BTC/USDT", "1h").slice(0, 10).equals(a.slice(0, 10))


def test_info_and_list_count_gaps_across_partitions(make_bars: Bars, tmp_path: Path) -> None:
    s = OhlcvStore(tmp_path)
    bars = make_bars(9000)
    ts = bars.column("timestamp").to_numpy()
    # one hole inside 2021, one exactly at the 2021/2022 seam
    seam = int(np.searchsorted(ts, 1_640_995_200_000))
    keep = np.ones(len(ts), bool)
    keep[100:103] = False
    keep[seam - 1 : seam + 1] = False
    s.write("binance", "ETH/USDT", "1h", bars.filter(pa.array(keep)))
    s.write("kraken", "BTC/USD", "1d", make_bars(5, tf_ms=86_400_000))
    infos = s.list_datasets()
    assert [(i.exchange, i.symbol, i.timeframe) for i in infos] == [
        ("binance", "ETH/USDT", "1h"),
        ("kraken", "BTC/USD", "1d"),
    ]
    eth = infos[0]
    assert (eth.rows, eth.gaps, eth.first, eth.last) == (8995, 2, int(ts[0]), int(ts[-1]))


def test_bad_writes_raise_and_leave_the_dataset_unchanged(make_bars: Bars, tmp_path: Path) -> None:
    s = OhlcvStore(tmp_path)
    good = make_bars(50)
    s.write("binance", "BTC/USDT", "1h", good)
    manifest = (tmp_path / "binance/BTC-USDT/1h/_manifest.json").read_bytes()
    dup = pa.concat_tables([make_bars(3, start=T2021 + 60 * HOUR)] * 2)
    off_grid = make_bars(3, start=T2021 + 60 * HOUR + 1)
    nan = make_bars(3, start=T2021 + 60 * HOUR)
    nan = nan.set_column(4, "close", pa.array([1.0, float("nan"), 1.0]))
    for bad in (dup, off_grid, nan, good.drop_columns(["volume"])):
        with pytest.raises(DataError):
            s.write("binance", "BTC/USDT", "1h", bad)
    assert (tmp_path / "binance/BTC-USDT/1h/_manifest.json").read_bytes() == manifest
    assert s.read("binance", "BTC/USDT", "1h").equals(good)


def test_crash_mid_write_keeps_old_version(
    make_bars: Bars, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = OhlcvStore(tmp_path)
    old = make_bars(20_000)
    s.write("binance", "BTC/USDT", "1h", old)
    calls = {"n": 0}
    real = store_mod._atomic_write_table

    def failing(path: Path, table: pa.Table) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second partition of this write fails (disk full, kill -9...)
            raise OSError("No space left on device")
        real(path, table)

    monkeypatch.setattr(store_mod, "_atomic_write_table", failing)
    with pytest.raises(OSError, match="No space"):
        s.write("binance", "BTC/USDT", "1h", make_bars(20_000, seed=9))
    monkeypatch.undo()
    assert s.read("binance", "BTC/USDT", "1h").equals(old)
    ddir = tmp_path / "binance/BTC-USDT/1h"
    listed = {p["file"] for p in json.loads((ddir / "_manifest.json").read_text())["partitions"]}
    assert {p.name for p in ddir.glob("part-*")} == listed  # the orphan was removed


def test_concurrent_readers_see_old_or_new_version(make_bars: Bars, tmp_path: Path) -> None:
    s = OhlcvStore(tmp_path)
    versions = [make_bars(20_000, seed=k) for k in range(4)]
    s.write("binance", "BTC/USDT", "1h", versions[0])
    closes = {v.column("close").to_numpy()[[0, -1]].tobytes(): k for k, v in enumerate(versions)}
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                got = s.read("binance", "BTC/USDT", "1h")
                key = got.column("close").to_numpy()[[0, -1]].tobytes()
                assert got.num_rows == 20_000
                seen.append(closes[key])  # KeyError = a mix of two versions
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for v in versions[1:]:
        s.write("binance", "BTC/USDT", "1h", v, mode="replace")
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert seen
    assert set(seen) <= {0, 1, 2, 3}


def test_quarantine_appends_rows_with_reason(make_bars: Bars, tmp_path: Path) -> None:
    s = OhlcvStore(tmp_path)
    s.write("binance", "BTC/USDT", "1h", make_bars(5))
    bad = make_bars(2, start=T2021 + 100 * HOUR).append_column(
        "reason", pa.array(["negative volume", "outlier spike"])
    )
    assert s.quarantine("binance", "BTC/USDT", "1h", bad, source="x.csv") == 2
    s.quarantine("binance", "BTC/USDT", "1h", bad.slice(0, 1), source="y.csv")
    q = s.read_quarantine("binance", "BTC/USDT", "1h")
    assert q.column("reason").to_pylist() == ["negative volume", "outlier spike", "negative volume"]
    assert q.column("source").to_pylist() == ["x.csv", "x.csv", "y.csv"]
    assert q.column("close").to_pylist()[:2] == bad.column("close").to_pylist()
    info = s.info("binance", "BTC/USDT", "1h")
    assert info is not None
    assert info.quarantined == 3
    assert info.rows == 5


def test_missing_dataset_and_bad_names(make_bars: Bars, tmp_path: Path) -> None:
    s = OhlcvStore(tmp_path)
    with pytest.raises(NotFoundError, match="binance ETH/USDT 1h"):
        s.read("binance", "ETH/USDT", "1h")
    with pytest.raises(InvalidInputError, match="timeframe"):
        s.read("binance", "ETH/USDT", "7m")
    with pytest.raises(InvalidInputError, match="symbol"):
        s.read("binance", "ETHUSDT!", "1h")
    s.write("binance", "BTC/USDT", "1h", make_bars(3))
    with pytest.raises(InvalidInputError, match="end"):
        s.read("binance", "BTC/USDT", "1h", "2022-01-01", "2021-01-01")


def test_load_ohlcv_seeds_bundled_binance_slice(tmp_path: Path) -> None:
    bars = load_ohlcv("binance", "BTC/USDT", "1h", "2021-06-01", "2021-07-01", data_dir=tmp_path)
    assert bars.schema == OHLCV_SCHEMA
    ts = bars.column("timestamp").to_numpy()
    assert ts[0] == 1_622_505_600_000
    assert ts[-1] == 1_625_094_000_000
    assert np.all(np.diff(ts) > 0)
    info = OhlcvStore(tmp_path).info("binance", "BTC/USDT", "1h")
    assert info is not None
    assert info.rows == 17_507
    with pytest.raises(NotFoundError):
        load_ohlcv("binance", "BTC/USDT", "4h", data_dir=tmp_path)


def test_load_ohlcv_uses_settings_data_dir(
    settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cryptoorchestrator as co

    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(settings.data_dir))  # type: ignore[attr-defined]
    bars = co.load_ohlcv("binance", "btc-usdt", "1h", start="2022-12-31")
    assert bars.num_rows == 24
    assert (settings.data_dir / "binance/BTC-USDT/1h/_manifest.json").is_file()  # type: ignore[attr-defined]


@hypothesis.settings(
    max_examples=25, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
@hypothesis.given(
    chunks=st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(1, 300), st.integers(0, 1_000)),
        min_size=1,
        max_size=5,
    )
)
def test_appends_equal_the_union_with_newest_winning(
    tmp_path_factory: pytest.TempPathFactory,
    make_bars: Bars,
    chunks: list[tuple[int, int, int]],
) -> None:
    s = OhlcvStore(tmp_path_factory.mktemp("prop"))
    expected: dict[int, tuple[float, ...]] = {}
    for offset, n, seed in chunks:
        bars = make_bars(n, start=T2021 + offset * HOUR, seed=seed)
        s.write("binance", "BTC/USDT", "1h", bars)
        for row in bars.to_pylist():
            expected[row["timestamp"]] = tuple(row.values())
    got = s.read("binance", "BTC/USDT", "1h")
    assert [tuple(r.values()) for r in got.to_pylist()] == [expected[k] for k in sorted(expected)]
    info = s.info("binance", "BTC/USDT", "1h")
    assert info is not None
    ts = np.array(sorted(expected))
    assert (info.rows, info.gaps) == (len(ts), int(np.count_nonzero(np.diff(ts) > HOUR)))


def test_importing_the_store_stays_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cryptoorchestrator.platform.data.store, cryptoorchestrator.platform.data"
        ".download, cryptoorchestrator.cli.data; "
        "print(sorted(m for m in ('ccxt', 'numba', 'ray', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_WRITER = """
import sys
import numpy as np, pyarrow as pa
from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA
s = OhlcvStore(sys.argv[1])
n = 20_000
ts = 1_609_459_200_000 + 3_600_000 * np.arange(n, dtype=np.int64)
k = 0
while True:
    px = np.full(n, 100.0 + k % 4)
    t = pa.Table.from_arrays([pa.array(ts)] + [pa.array(px)] * 5, schema=OHLCV_SCHEMA)
    s.write("binance", "BTC/USDT", "1h", t, mode="replace")
    print(k, flush=True)
    k += 1
"""


def test_killed_writer_never_leaves_a_torn_dataset(tmp_path: Path) -> None:
    import subprocess
    import sys

    s = OhlcvStore(tmp_path)
    for delay_lines in (1, 3, 6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(delay_lines):  # let it commit a few versions, then kill it mid-stream
            proc.stdout.readline()
        proc.kill()
        proc.wait()
        got = s.read("binance", "BTC/USDT", "1h")
        assert got.num_rows == 20_000
        closes = np.unique(got.column("close").to_numpy())
        assert len(closes) == 1  # one whole version, never a mix
        assert closes[0] in (100.0, 101.0, 102.0, 103.0)
    # the next write succeeds and clears what the killed writer left behind
    s.write("binance", "BTC/USDT", "1h", got.slice(0, 10), mode="replace")
    ddir = s.dataset_dir("binance", "BTC/USDT", "1h")
    assert not list(ddir.glob(".*.tmp-*"))
    assert len(list(ddir.glob("part-*.parquet"))) == 1
