"""The downloader against a scripted in-memory ccxt stand-in: paging, retries, resume, errors.

The end-to-end run through ccxt's real ``binance`` class and HTTP is in
``tests/integration/test_download.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.data.download import download_ohlcv, make_exchange
from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.errors import (
    ExchangeError,
    InvalidInputError,
    RetryableExchangeError,
)

HOUR = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01
Bars = Callable[..., pa.Table]


class FakeExchange:
    """Serves bars like ccxt's ``fetch_ohlcv``; ``script`` holds exceptions to raise first."""

    id = "binance"
    timeframes = {"1m": "1m", "1h": "1h", "1d": "1d"}
    has = {"fetchTime": False}

    def __init__(self, bars: pa.Table, script: list[BaseException] | None = None) -> None:
        self.rows = [list(r.values()) for r in bars.to_pylist()]
        self.script = list(script or [])
        self.markets: dict[str, Any] = {}
        self.calls: list[int] = []
        self.last_response_headers: dict[str, str] = {}

    def load_markets(self) -> dict[str, Any]:
        self.markets = {"BTC/USDT": {}, "ETH/USDT": {}}
        return self.markets

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list[list[Any]]:
        self.calls.append(since)
        if self.script:
            exc = self.script.pop(0)
            if isinstance(exc, ccxt.RateLimitExceeded):
                self.last_response_headers = {"Retry-After": "7"}
            raise exc
        return [r for r in self.rows if r[0] >= since][:limit]


@pytest.fixture
def store(tmp_path: Path) -> OhlcvStore:
    return OhlcvStore(tmp_path)


def _run(ex: Any, store: OhlcvStore, start: int, end: int | None, **kw: Any) -> Any:
    kw.setdefault("now_ms", T0 + 10_000 * HOUR)
    return download_ohlcv(ex, "BTC/USDT", "1h", start, end, store=store, limit=100, **kw)


def test_pages_through_and_stores_everything(make_bars: Bars, store: OhlcvStore) -> None:
    bars = make_bars(1000)
    ex = FakeExchange(bars)
    [rep] = _run(ex, store, T0, T0 + 1000 * HOUR)
    assert rep.rows_added == 1000
    assert rep.requests == 10
    assert ex.calls == [T0 + 100 * HOUR * k for k in range(10)]
    assert store.read("binance", "BTC/USDT", "1h").equals(bars)


def test_excludes_the_candle_still_forming(make_bars: Bars, store: OhlcvStore) -> None:
    ex = FakeExchange(make_bars(50))
    # "now" is 30 minutes into candle 40: candles 0..39 are closed
    [rep] = _run(ex, store, T0, None, now_ms=T0 + 40 * HOUR + 1_800_000)
    assert rep.rows_added == 40
    info = store.info("binance", "BTC/USDT", "1h")
    assert info is not None
    assert info.last == T0 + 39 * HOUR


def test_retries_transient_errors_with_exponential_backoff(
    make_bars: Bars, store: OhlcvStore
) -> None:
    script: list[BaseException] = [
        ccxt.RequestTimeout("t"),
        ccxt.ExchangeNotAvailable("503"),
        ccxt.NetworkError("reset"),
        ccxt.RateLimitExceeded("429"),
    ]
    ex = FakeExchange(make_bars(300), script)
    sleeps: list[float] = []
    [rep] = _run(ex, store, T0, T0 + 300 * HOUR, sleep=sleeps.append, backoff_s=0.5)
    assert sleeps == [0.5, 1.0, 2.0, 7.0]  # the 429's Retry-After (7 s) beats 4 s
    assert rep.retries == 4
    assert rep.rows_added == 300


def test_gives_up_and_leaves_stored_data_untouched(make_bars: Bars, store: OhlcvStore) -> None:
    bars = make_bars(500)
    store.write("binance", "BTC/USDT", "1h", bars.slice(0, 200))
    before = store.read("binance", "BTC/USDT", "1h")
    manifest = (store.dataset_dir("binance", "BTC/USDT", "1h") / "_manifest.json").read_bytes()
    # the first page works, then the exchange stays down
    ex = FakeExchange(bars)
    real = ex.fetch_ohlcv
    ok_calls = {"n": 0}

    def flaky(symbol: str, timeframe: str, since: int, limit: int) -> list[list[Any]]:
        ok_calls["n"] += 1
        if ok_calls["n"] > 1:
            raise ccxt.ExchangeNotAvailable("down")
        return real(symbol, timeframe, since, limit)

    ex.fetch_ohlcv = flaky  # type: ignore[method-assign]
    with pytest.raises(RetryableExchangeError, match="failed after 3 tries"):
        _run(ex, store, T0, T0 + 500 * HOUR, max_retries=2, sleep=lambda s: None)
    dd = store.dataset_dir("binance", "BTC/USDT", "1h")
    assert (dd / "_manifest.json").read_bytes() == manifest
    assert store.read("binance", "BTC/USDT", "1h").equals(before)


def test_resumes_after_the_last_stored_candle(make_bars: Bars, store: OhlcvStore) -> None:
    bars = make_bars(500)
    store.write("binance", "BTC/USDT", "1h", bars.slice(0, 250))
    ex = FakeExchange(bars)
    [rep] = _run(ex, store, T0, T0 + 500 * HOUR)
    assert rep.resumed_from == T0 + 249 * HOUR
    assert ex.calls[0] == T0 + 250 * HOUR
    assert rep.rows_added == 250
    assert store.read("binance", "BTC/USDT", "1h").equals(bars)


def test_reports_gaps_and_quarantines_bad_rows(make_bars: Bars, store: OhlcvStore) -> None:
    bars = make_bars(300)
    keep = np.ones(300, bool)
    keep[100:105] = False
    bad_vol = bars.column("volume").to_numpy().copy()
    bad_vol[200] = -1.0
    served = bars.set_column(5, bars.schema.field(5), pa.array(bad_vol)).filter(pa.array(keep))
    [rep] = _run(FakeExchange(served), store, T0, T0 + 300 * HOUR)
    assert rep.quarantined == 1
    assert rep.quarantine_reasons == {"negative volume": 1}
    assert [(g.start, g.missing) for g in rep.gaps] == [(T0 + 100 * HOUR, 5), (T0 + 200 * HOUR, 1)]
    q = store.read_quarantine("binance", "BTC/USDT", "1h")
    assert q.column("timestamp").to_pylist() == [T0 + 200 * HOUR]
    assert "2 gap(s), 1 bad row(s) quarantined" in rep.summary()


def test_several_symbols_and_timeframes(make_bars: Bars, store: OhlcvStore) -> None:
    ex = FakeExchange(make_bars(48))
    reps = download_ohlcv(
        ex,
        ["BTC/USDT", "eth-usdt"],
        ["1h", "1d"],
        T0,
        T0 + 48 * HOUR,
        store=store,
        now_ms=T0 + 100 * HOUR,
    )
    assert [(r.symbol, r.timeframe) for r in reps] == [
        ("BTC/USDT", "1h"),
        ("BTC/USDT", "1d"),
        ("ETH/USDT", "1h"),
        ("ETH/USDT", "1d"),
    ]
    assert {i.symbol for i in store.list_datasets()} == {"BTC/USDT", "ETH/USDT"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"symbols": "DOGE/EUR"}, "symbol"),
        ({"timeframes": "3m"}, "timeframe"),
        ({"timeframes": "2m"}, "timeframe"),
        ({"start": T0 + HOUR, "end": T0}, "end"),
        ({"start": "yesterday"}, "start"),
    ],
)
def test_bad_input_is_one_clear_error(
    make_bars: Bars, store: OhlcvStore, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"symbols": "BTC/USDT", "timeframes": "1h", "start": T0, "end": None}
    args.update(kwargs)
    ex = FakeExchange(make_bars(5))
    with pytest.raises(InvalidInputError) as info:
        download_ohlcv(ex, store=store, now_ms=T0 + 10 * HOUR, **args)
    assert info.value.field == field
    assert "\n" not in str(info.value)
    assert store.list_datasets() == []


def test_non_transient_exchange_error_is_not_retried(make_bars: Bars, store: OhlcvStore) -> None:
    ex = FakeExchange(make_bars(5), [ccxt.AuthenticationError("bad key")])
    with pytest.raises(ExchangeError, match="AuthenticationError"):
        _run(ex, store, T0, T0 + 5 * HOUR, sleep=lambda s: pytest.fail("retried"))


def test_make_exchange() -> None:
    ex = make_exchange("binance")
    assert ex.enableRateLimit
    assert ex.urls["api"]["public"].startswith("https://api.binance.com")
    sim = make_exchange("binance", api_url="http://127.0.0.1:8765/")
    assert sim.urls["api"]["public"] == "http://127.0.0.1:8765/api/v3"
    assert sim.enableRateLimit
    with pytest.raises(InvalidInputError, match="exchange.*binanse.*allowed: binance"):
        make_exchange("binanse")
    with pytest.raises(InvalidInputError, match="api_url"):
        make_exchange("kraken", api_url="http://127.0.0.1:1")
    with pytest.raises(InvalidInputError, match="api_url"):
        make_exchange("binance", api_url="127.0.0.1:1")
