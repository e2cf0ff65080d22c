"""ccxt's real ``binance`` class (sync and async) against the exchange simulator on loopback."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.exchange.sim_market import read_candles
from cryptoorchestrator.platform.exchange.simulator import (
    ExchangeSimulator,
    ccxt_binance_for,
    run_simulator_in_thread,
)

HOUR = 3_600_000


@pytest.fixture(scope="module")
def candles(shared_data: Path) -> pa.Table:
    """The last 3,000 real Binance BTC/USDT hourly candles (2024)."""
    table = read_candles(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    return table.slice(table.num_rows - 3000)


@pytest.fixture(scope="module")
def history_sim(candles: pa.Table) -> Iterator[ExchangeSimulator]:
    """A simulator in history mode: every candle visible, the clock at the end of the data."""
    with run_simulator_in_thread({"BTC/USDT": candles}) as sim:
        yield sim


@pytest.fixture(scope="module")
def public_client(history_sim: ExchangeSimulator) -> Any:
    ex = ccxt_binance_for(history_sim.base_url)
    ex.load_markets()
    return ex


def _admin(sim: ExchangeSimulator, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310  (loopback URL built by the test)
        sim.base_url + path, data=data, method="POST" if body is not None else "GET"
    )
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


# ---------------------------------------------------------------- market data


def test_load_markets_reads_binance_filters(public_client: Any) -> None:
    market = public_client.market("BTC/USDT")
    assert market["id"] == "BTCUSDT"
    assert market["spot"] is True
    assert market["active"] is True
    assert market["precision"]["price"] == 0.01
    assert market["precision"]["amount"] == 0.00001
    assert market["limits"]["amount"]["min"] == 0.00001
    assert market["limits"]["cost"]["min"] == 5.0
    assert public_client.fetch_time() == _admin_now(public_client)


def _admin_now(client: Any) -> int:
    root = client.urls["api"]["public"].rsplit("/api/", 1)[0]
    with urllib.request.urlopen(root + "/_sim/clock", timeout=10) as resp:  # noqa: S310
        return int(json.loads(resp.read())["now"])


def test_fetch_ohlcv_paginates_through_all_history(public_client: Any, candles: pa.Table) -> None:
    ts = candles.column("timestamp").to_pylist()
    rows: list[list[float]] = []
    since = ts[0]
    while True:
        page = public_client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=1000)
        if not page:
            break
        rows.extend(page)
        since = page[-1][0] + HOUR
    assert [r[0] for r in rows] == ts
    np.testing.assert_allclose([r[4] for r in rows], candles.column("close").to_numpy())
    np.testing.assert_allclose([r[5] for r in rows], candles.column("volume").to_numpy())
    # ccxt's own pagination helper walks the same endpoint (it needs `until` for old data).
    auto = public_client.fetch_ohlcv(
        "BTC/USDT", "1h", since=ts[0], params={"paginate": True, "until": ts[2499]}
    )
    assert sorted({r[0] for r in auto if r[0] <= ts[2499]}) == ts[:2500]


def test_fetch_ohlcv_default_is_latest_and_daily_aggregates(
    public_client: Any, candles: pa.Table
) -> None:
    latest = public_client.fetch_ohlcv("BTC/USDT", "1h", limit=5)
    assert [r[0] for r in latest] == candles.column("timestamp").to_pylist()[-5:]
    daily = public_client.fetch_ohlcv("BTC/USDT", "1d", limit=3)
    hourly = public_client.fetch_ohlcv("BTC/USDT", "1h", since=daily[0][0], limit=24)
    assert hourly[0][0] == daily[0][0]
    assert daily[0][1] == hourly[0][1]
    assert daily[0][2] == max(r[2] for r in hourly)
    assert daily[0][3] == min(r[3] for r in hourly)
    assert daily[0][4] == hourly[-1][4]
    with pytest.raises(ccxt.BadRequest):
        # Finer than the stored candles: Binance's "Invalid interval." (-1120).
        public_client.fetch_ohlcv("BTC/USDT", "1m", limit=5)


def test_fetch_ticker_order_book_and_trades(public_client: Any, candles: pa.Table) -> None:
    ticker = public_client.fetch_ticker("BTC/USDT")
    last_close = candles.column("close")[-1].as_py()
    assert ticker["last"] == pytest.approx(last_close)
    day = candles.slice(candles.num_rows - 24)
    assert ticker["high"] == pytest.approx(max(day.column("high").to_pylist()))
    assert ticker["low"] == pytest.approx(min(day.column("low").to_pylist()))
    assert ticker["bid"] < ticker["ask"]
    tickers = public_client.fetch_tickers(["BTC/USDT"])
    assert tickers["BTC/USDT"]["last"] == ticker["last"]

    book = public_client.fetch_order_book("BTC/USDT", limit=10)
    assert len(book["bids"]) == 10
    assert len(book["asks"]) == 10
    assert book["bids"][0][0] < book["asks"][0][0]
    assert [b[0] for b in book["bids"]] == sorted((b[0] for b in book["bids"]), reverse=True)

    trades = public_client.fetch_trades("BTC/USDT", limit=8)
    assert len(trades) == 8
    assert trades[-1]["price"] == pytest.approx(last_close)
    times = [t["timestamp"] for t in trades]
    assert times == sorted(times)
    since = candles.column("timestamp")[10].as_py()
    early = public_client.fetch_trades("BTC/USDT", since=since, limit=4)
    assert early[0]["timestamp"] >= since
    assert early[0]["price"] == pytest.approx(candles.column("open")[10].as_py())


def test_unknown_symbol_is_bad_symbol(public_client: Any) -> None:
    with pytest.raises(ccxt.BadSymbol):
        public_client.public_get_ticker_24hr({"symbol": "DOGEUSDT"})


def test_live_clock_reveals_candles_one_by_one(candles: pa.Table) -> None:
    ts = candles.column("timestamp").to_pylist()
    with run_simulator_in_thread({"BTC/USDT": candles}, start_ms=ts[100] + HOUR // 2) as sim:
        ex = ccxt_binance_for(sim.base_url)
        last = ex.fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert last[-1][0] == ts[100]
        # The current candle is partial: its close is the price now, inside the real range.
        assert (
            candles.column("low")[100].as_py() <= last[-1][4] <= candles.column("high")[100].as_py()
        )
        _admin(sim, "/_sim/clock", {"advance": HOUR // 2})
        last = ex.fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert last[-1][0] == ts[101]
        assert last[-2][4] == pytest.approx(candles.column("close")[100].as_py())
        assert ex.fetch_time() == ts[101]


def test_async_client_reads_market_data(history_sim: ExchangeSimulator) -> None:
    async def run() -> tuple[list[list[float]], dict[str, Any]]:
        ex = ccxt_binance_for(history_sim.base_url, async_=True)
        try:
            await ex.load_markets()
            return await ex.fetch_ohlcv("BTC/USDT", "4h", limit=3), await ex.fetch_ticker(
                "BTC/USDT"
            )
        finally:
            await ex.close()

    ohlcv, ticker = asyncio.run(run())
    assert len(ohlcv) == 3
    assert ohlcv[1][0] - ohlcv[0][0] == 4 * HOUR
    assert ticker["symbol"] == "BTC/USDT"


def test_in_process_start_stop_on_one_loop(candles: pa.Table) -> None:
    async def run() -> int:
        sim = ExchangeSimulator({"BTC/USDT": candles})
        base = await sim.start()
        assert base.startswith("http://127.0.0.1:")
        ex = ccxt_binance_for(base, async_=True)
        try:
            return int(await ex.fetch_time())
        finally:
            await ex.close()
            await sim.stop()

    assert asyncio.run(run()) == candles.column("timestamp")[-1].as_py() + HOUR
