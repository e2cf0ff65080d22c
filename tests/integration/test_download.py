"""``cryptoorch data download`` end to end: ccxt's real ``binance`` class, HTTP on loopback, the
exchange simulator replaying real FTX 1m candles, and the Parquet store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.platform.data.importers import read_ohlcv_file
from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.data.times import to_ms
from cryptoorchestrator.platform.exchange.sim import (
    ExchangeSimulator,
    run_simulator_in_thread,
)

MINUTE = 60_000


@pytest.fixture(scope="module")
def ftx_1m(shared_data: Path) -> pa.Table:
    return read_ohlcv_file(shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv")


@pytest.fixture(scope="module")
def sim(ftx_1m: pa.Table) -> Iterator[ExchangeSimulator]:
    """History mode: every candle visible, the clock at the end of the data."""
    with run_simulator_in_thread({"BTC/USDT": ftx_1m}) as s:
        yield s


def cli(
    capsys: pytest.CaptureFixture[str], *args: str, progress: bool = False
) -> tuple[int, str, str]:
    code = 0
    try:
        flag = "--progress" if progress else "--no-progress"
        main(["data", "download", flag, "--backoff", "0.01", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _expected(ftx: pa.Table, start: str, end: str) -> pa.Table:
    ts = ftx.column("timestamp").to_numpy()
    return ftx.filter(pa.array((ts >= to_ms(start)) & (ts < to_ms(end))))


def _same(a: pa.Table, b: pa.Table) -> None:
    np.testing.assert_array_equal(
        a.column("timestamp").to_numpy(), b.column("timestamp").to_numpy()
    )
    for col in ("open", "high", "low", "close", "volume"):
        # the simulator sends Binance's 8-decimal strings
        np.testing.assert_allclose(a.column(col).to_numpy(), b.column(col).to_numpy(), rtol=1e-12)


def test_download_pages_resumes_and_survives_faults(
    sim: ExchangeSimulator, ftx_1m: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    base = [
        "--exchange",
        "binance",
        "--symbol",
        "BTC/USDT",
        "--timeframe",
        "1m",
        "--api-url",
        sim.base_url,
        "--data-dir",
        dd,
    ]
    sim.stats.clear()
    code, out, err = cli(capsys, *base, "--start", "2022-01-01", "--end", "2022-01-03T12:00")
    assert code == 0, err
    assert "binance BTC/USDT 1m: 3600 rows added" in out
    assert "0 gap(s), 0 bad row(s) quarantined" in out
    assert sim.stats["GET /api/v3/klines"] == 4  # 1000 candles per page
    store = OhlcvStore(dd)
    _same(
        store.read("binance", "BTC/USDT", "1m"), _expected(ftx_1m, "2022-01-01", "2022-01-03T12:00")
    )

    # the exchange fails twice with 503 and once with 429 + Retry-After; the run still completes,
    # resuming after the last stored candle
    sim.set_faults(fail_next=2, rate_limit_next=1, retry_after_s=1, path_prefix="/api/v3/klines")
    sim.stats.clear()
    try:
        code, out, err = cli(capsys, *base, "--start", "2022-01-01", "--end", "2022-01-05")
    finally:
        sim.clear_faults()
    assert code == 0, err
    assert "2160 rows added" in out
    assert sim.stats["GET /api/v3/klines"] == 3 + 3  # three faulted answers, three pages
    assert "resumed after 2022-01-03 11:59" in out
    _same(store.read("binance", "BTC/USDT", "1m"), _expected(ftx_1m, "2022-01-01", "2022-01-05"))


def test_several_symbols_and_timeframes_in_one_call(
    sim: ExchangeSimulator, ftx_1m: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    code, out, err = cli(
        capsys,
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "-t",
        "1d",
        "--start",
        "2022-01-02",
        "--end",
        "2022-01-09",
        "--api-url",
        sim.base_url,
        "--data-dir",
        dd,
        progress=True,
    )
    assert code == 0, err
    assert "BTC/USDT 1h: 168 rows added" in out
    assert "BTC/USDT 1d: 7 rows added" in out
    daily = OhlcvStore(dd).read("binance", "BTC/USDT", "1d")
    day = _expected(ftx_1m, "2022-01-02", "2022-01-03")
    assert daily.column("high")[0].as_py() == pytest.approx(max(day.column("high").to_pylist()))
    assert daily.column("volume")[0].as_py() == pytest.approx(sum(day.column("volume").to_pylist()))


def test_bad_input_and_dead_exchange_leave_the_store_alone(
    sim: ExchangeSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    common = ["-e", "binance", "--api-url", sim.base_url, "--data-dir", dd]
    cli(
        capsys,
        *common,
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--start",
        "2022-01-02",
        "--end",
        "2022-01-03",
    )
    store = OhlcvStore(dd)
    before = store.read("binance", "BTC/USDT", "1h")
    cases = [
        (["-s", "DOGE/EUR", "-t", "1h", "--start", "2022-01-02"], "symbol: binance has no market"),
        (["-s", "BTC/USDT", "-t", "7m", "--start", "2022-01-02"], "timeframe: unknown timeframe"),
        (["-s", "BTC/USDT", "-t", "1h", "--start", "2022-01-05", "--end", "2022-01-04"], "end:"),
    ]
    for args, message in cases:
        code, _, err = cli(capsys, *common, *args)
        assert code == 2
        assert err.count("\n") == 1
        assert message in err
    code, _, err = cli(
        capsys,
        "-e",
        "binanse",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--start",
        "2022-01-01",
        "--data-dir",
        dd,
    )
    assert code == 2
    assert "exchange: ccxt does not know exchange 'binanse'" in err
    sim.set_faults(fail_next=100, path_prefix="/api/v3/klines")
    try:
        code, _, err = cli(
            capsys, *common, "-s", "BTC/USDT", "-t", "1h", "--start", "2022-01-02", "--retries", "2"
        )
    finally:
        sim.clear_faults()
    assert code == 2
    assert "failed after 3 tries" in err
    assert store.read("binance", "BTC/USDT", "1h").equals(before)


def test_candle_still_forming_on_the_exchange_is_not_stored(
    ftx_1m: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = to_ms("2022-01-02T10:30")  # the exchange's clock: half-way through the 10:00 hour
    with run_simulator_in_thread({"BTC/USDT": ftx_1m}, start_ms=now) as live:
        code, out, err = cli(
            capsys,
            "-e",
            "binance",
            "-s",
            "BTC/USDT",
            "-t",
            "1h",
            "--start",
            "2022-01-02",
            "--api-url",
            live.base_url,
            "--data-dir",
            str(tmp_path),
        )
    assert code == 0, err
    info = OhlcvStore(tmp_path).info("binance", "BTC/USDT", "1h")
    assert info is not None
    assert (info.rows, info.last_text) == (10, "2022-01-02 09:00")
