"""Replayed candles, the intra-candle price path, klines and the simulated clock."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from cryptoorchestrator.platform.errors import DataError, InvalidInputError
from cryptoorchestrator.platform.exchange.sim.candles import infer_timeframe, read_candles
from cryptoorchestrator.platform.exchange.sim.clock import SimClock
from cryptoorchestrator.platform.exchange.sim.market import ReplayMarket, default_spec
from cryptoorchestrator.platform.exchange.sim.path import first_touch, partial_ohlc, price_on_path
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

HOUR = 3_600_000


@pytest.fixture(scope="module")
def btc_1h(shared_data: Path) -> pa.Table:
    return read_candles(shared_data / "candles" / "binance_BTC_USDT-1h.feather")


def _market(table: pa.Table) -> ReplayMarket:
    return ReplayMarket(default_spec("BTC/USDT", 30_000.0), table)


def test_read_feather_gives_ohlcv_schema_in_ms(btc_1h: pa.Table, shared_data: Path) -> None:
    raw = feather.read_table(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    assert btc_1h.schema == OHLCV_SCHEMA
    assert btc_1h.num_rows == raw.num_rows
    first = raw.column("date")[0].as_py()
    assert btc_1h.column("timestamp")[0].as_py() == int(first.timestamp() * 1000)
    assert infer_timeframe(btc_1h.column("timestamp").to_numpy()) == "1h"


def test_read_csv_with_text_timestamps(shared_data: Path) -> None:
    table = read_candles(shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv")
    ts = table.column("timestamp").to_numpy()
    # 2021-12-31 23:01 UTC
    assert ts[0] == 1_640_991_660_000
    assert infer_timeframe(ts) == "1m"
    assert bool(np.all(np.diff(ts) == 60_000))


def test_read_rejects_missing_file_and_non_ohlcv(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        read_candles(tmp_path / "nope.feather")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError):
        read_candles(bad)


def test_default_spec_follows_price_level() -> None:
    btc = default_spec("btc/usdt", 60_000.0)
    assert (btc.tick_size, btc.step_size, btc.market_id) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        "BTCUSDT",
    )
    cheap = default_spec("DOGE/USDT", 0.12)
    assert cheap.tick_size < Decimal("0.0001")
    assert cheap.step_size == Decimal(1)


@pytest.mark.parametrize(("o", "h", "lo", "c"), [(10.0, 14.0, 8.0, 12.0), (12.0, 14.0, 8.0, 10.0)])
def test_price_path_stays_inside_the_candle_and_ends_at_close(
    o: float, h: float, lo: float, c: float
) -> None:
    fracs = np.linspace(0, 1, 301)
    prices = [price_on_path(o, h, lo, c, f) for f in fracs]
    assert prices[0] == o
    assert prices[-1] == pytest.approx(c)
    assert min(prices) == pytest.approx(lo)
    assert max(prices) == pytest.approx(h)
    # A rising candle visits its low before its high, a falling one the other way round.
    assert (int(np.argmin(prices)) < int(np.argmax(prices))) == (c >= o)
    for f in fracs:
        po, ph, pl, pc = partial_ohlc(o, h, lo, c, float(f))
        seen = prices[: int(round(f * 300)) + 1]
        assert po == o
        assert ph == pytest.approx(max(seen))
        assert pl == pytest.approx(min(seen))
        assert pc == pytest.approx(price_on_path(o, h, lo, c, float(f)))


def test_first_touch_finds_the_crossing_point() -> None:
    # Rising candle 10 -> 8 -> 14 -> 12: a buy at 9 trades on the first leg, half way down.
    f = first_touch(10.0, 14.0, 8.0, 12.0, 0.0, 1.0, 9.0, buy=True)
    assert f is not None
    assert price_on_path(10.0, 14.0, 8.0, 12.0, f) == pytest.approx(9.0)
    assert f == pytest.approx(1 / 6)
    # A sell at 13 trades on the second leg; after the high passed it no longer does.
    g = first_touch(10.0, 14.0, 8.0, 12.0, 0.0, 1.0, 13.0, buy=False)
    assert g is not None
    assert price_on_path(10.0, 14.0, 8.0, 12.0, g) == pytest.approx(13.0)
    assert first_touch(10.0, 14.0, 8.0, 12.0, 0.9, 1.0, 13.0, buy=False) is None
    assert first_touch(10.0, 14.0, 8.0, 12.0, 0.0, 1.0, 7.9, buy=True) is None


def test_klines_pagination_covers_history_without_gaps_or_repeats(btc_1h: pa.Table) -> None:
    table = btc_1h.slice(0, 2500)
    market = _market(table)
    now = market.end_ms
    seen: list[int] = []
    since = int(table.column("timestamp")[0].as_py())
    while True:
        page = market.klines(HOUR, now, start=since, limit=1000)
        if not page:
            break
        seen.extend(b.open_time for b in page)
        since = page[-1].open_time + 1
    assert seen == table.column("timestamp").to_pylist()
    closes = [b.close for b in market.klines(HOUR, now, start=seen[0], limit=1000)]
    assert closes == table.column("close").to_pylist()[:1000]


def test_klines_show_only_the_past_and_a_partial_current_candle(btc_1h: pa.Table) -> None:
    market = _market(btc_1h)
    i = 5000
    open_time = int(market.ts[i])
    now = open_time + HOUR // 2
    bars = market.klines(HOUR, now, limit=3)
    assert [b.open_time for b in bars] == [int(market.ts[i - 2]), int(market.ts[i - 1]), open_time]
    assert bars[0].closed
    assert bars[1].closed
    assert not bars[2].closed
    cur = bars[2]
    assert cur.open == float(market.o[i])
    assert float(market.l[i]) <= cur.low <= cur.close <= cur.high <= float(market.h[i])
    assert cur.volume == pytest.approx(float(market.v[i]) / 2)
    assert market.price(now) == pytest.approx(cur.close)
    # endTime: the last candles opening at or before it.
    end_bars = market.klines(HOUR, now, end=int(market.ts[100]), limit=5)
    assert [b.open_time for b in end_bars] == [int(t) for t in market.ts[96:101]]


def test_daily_klines_aggregate_the_hourly_candles(btc_1h: pa.Table) -> None:
    market = _market(btc_1h)
    day = 86_400_000
    start = (int(market.ts[3000]) // day + 1) * day
    bars = market.klines(day, market.end_ms, start=start, limit=3)
    assert [b.open_time for b in bars] == [start, start + day, start + 2 * day]
    for bar in bars:
        sel = (market.ts >= bar.open_time) & (market.ts < bar.open_time + day)
        assert bar.open == float(market.o[sel][0])
        assert bar.close == float(market.c[sel][-1])
        assert bar.high == float(market.h[sel].max())
        assert bar.low == float(market.l[sel].min())
        assert bar.volume == pytest.approx(float(market.v[sel].sum()))
    weekly = market.klines(7 * day, market.end_ms, limit=2)
    # Binance's weeks open on Monday 00:00 UTC.
    assert all(
        np.datetime64(b.open_time, "ms").astype("datetime64[D]").item().weekday() == 0
        for b in weekly
    )
    with pytest.raises(InvalidInputError):
        market.klines(90 * 60_000, market.end_ms)


def test_clock_frozen_stepped_and_running() -> None:
    clock = SimClock(1_000, speed=0)
    assert clock.now() == 1_000
    clock.advance(500)
    assert clock.now() == 1_500
    clock.set_time(10_000)
    assert clock.now() == 10_000
    with pytest.raises(InvalidInputError):
        clock.advance(-1)
    clock.set_speed(1_000_000)
    a = clock.now()
    b = clock.now()
    assert 10_000 <= a <= b
    with pytest.raises(InvalidInputError):
        SimClock(0, speed=-1)
