"""ccxt's real ``binance`` class (sync and async) against the exchange simulator on loopback."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.exchange.ccxt_factory import ClientKind, build_ccxt_client
from cryptoorchestrator.platform.exchange.sim import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    ExchangeSimulator,
    SimAccountSpec,
    run_simulator_in_thread,
)

HOUR = 3_600_000


def _sim_client(base_url: str, *, kind: ClientKind = "sync", **kwargs: Any) -> Any:
    """Return ccxt's real ``binance`` at the simulator, unthrottled (tests pace themselves)."""
    return build_ccxt_client("binance", base_url, kind=kind, enable_rate_limit=False, **kwargs)


@pytest.fixture(scope="module")
def history_sim(candles: pa.Table) -> Iterator[ExchangeSimulator]:
    """A simulator in history mode: every candle visible, the clock at the end of the data."""
    with run_simulator_in_thread({"BTC/USDT": candles}) as sim:
        yield sim


@pytest.fixture(scope="module")
def public_client(history_sim: ExchangeSimulator) -> Any:
    ex = _sim_client(history_sim.base_url)
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
        ex = _sim_client(sim.base_url)
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
        ex = _sim_client(history_sim.base_url, kind="async")
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
        ex = _sim_client(base, kind="async")
        try:
            return int(await ex.fetch_time())
        finally:
            await ex.close()
            await sim.stop()

    assert asyncio.run(run()) == candles.column("timestamp")[-1].as_py() + HOUR


# ---------------------------------------------------------------- trading


@pytest.fixture
def trading(candles: pa.Table) -> Iterator[tuple[ExchangeSimulator, Any]]:
    """A stepped simulator at the open of candle 100 and a signed sync client."""
    start = candles.column("timestamp")[100].as_py()
    accounts = [SimAccountSpec(balances={"USDT": Decimal(10_000), "BTC": Decimal("0.5")})]
    with run_simulator_in_thread({"BTC/USDT": candles}, start_ms=start, accounts=accounts) as sim:
        ex = _sim_client(sim.base_url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET)
        ex.load_markets()
        yield sim, ex


def _d(value: float | str) -> Decimal:
    return Decimal(str(value))


def test_order_lifecycle_with_client_ids(trading: tuple[ExchangeSimulator, Any]) -> None:
    sim, ex = trading
    balance = ex.fetch_balance()
    assert balance["USDT"]["free"] == 10_000
    assert balance["BTC"]["free"] == 0.5

    bought = ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "bot-1"})
    assert bought["status"] == "closed"
    assert bought["clientOrderId"] == "bot-1"
    assert bought["filled"] == 0.01
    fee = _d(bought["fee"]["cost"])
    assert bought["fee"]["currency"] == "BTC"
    assert fee == Decimal("0.00001")
    free = sim.balances()
    assert free["BTC"] == (Decimal("0.51") - fee, Decimal(0))
    assert free["USDT"] == (Decimal(10_000) - _d(bought["info"]["cummulativeQuoteQty"]), Decimal(0))

    price = ex.fetch_ticker("BTC/USDT")["last"]
    limit_price = float(ex.price_to_precision("BTC/USDT", price * 0.8))
    resting = ex.create_order(
        "BTC/USDT", "limit", "buy", 0.02, limit_price, params={"clientOrderId": "bot-2"}
    )
    assert resting["status"] == "open"
    open_orders = ex.fetch_open_orders("BTC/USDT")
    assert [o["clientOrderId"] for o in open_orders] == ["bot-2"]
    locked = ex.fetch_balance()["USDT"]["used"]
    assert _d(locked) == _d(ex.price_to_precision("BTC/USDT", limit_price)) * Decimal("0.02")

    by_id = ex.fetch_order(resting["id"], "BTC/USDT")
    by_client = ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "bot-2"})
    assert by_id["id"] == by_client["id"] == resting["id"]
    assert by_client["price"] == limit_price

    cancelled = ex.cancel_order(resting["id"], "BTC/USDT")
    assert cancelled["status"] == "canceled"
    assert ex.fetch_order(resting["id"], "BTC/USDT")["status"] == "canceled"
    assert ex.fetch_open_orders("BTC/USDT") == []
    assert ex.fetch_balance()["USDT"]["used"] == 0

    assert [o["clientOrderId"] for o in ex.fetch_orders("BTC/USDT")] == ["bot-1", "bot-2"]
    trades = ex.fetch_my_trades("BTC/USDT")
    assert len(trades) == 1
    assert trades[0]["order"] == bought["id"]
    assert trades[0]["takerOrMaker"] == "taker"
    assert trades[0]["amount"] == 0.01


def test_limit_order_fills_when_the_replayed_price_reaches_it(
    trading: tuple[ExchangeSimulator, Any], candles: pa.Table
) -> None:
    sim, ex = trading
    lows = candles.column("low").to_numpy()[100:148]
    open_ = candles.column("open")[100].as_py()
    target = float(ex.price_to_precision("BTC/USDT", (open_ + lows.min()) / 2))
    assert target < open_
    first_hit = 100 + int(np.argmax(lows <= target))
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.05, target)
    for i in range(100, first_hit + 1):
        assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "open", i
        sim.advance(HOUR)
    filled = ex.fetch_order(order["id"], "BTC/USDT")
    assert filled["status"] == "closed"
    assert filled["average"] == target
    trade = ex.fetch_my_trades("BTC/USDT")[-1]
    assert trade["takerOrMaker"] == "maker"
    hit_open = candles.column("timestamp")[first_hit].as_py()
    assert hit_open <= trade["timestamp"] < hit_open + HOUR


def test_partial_fills_step_candle_by_candle(candles: pa.Table) -> None:
    start = candles.column("timestamp")[200].as_py()
    with run_simulator_in_thread(
        {"BTC/USDT": candles}, start_ms=start, partial_fill_ratio="0.25"
    ) as sim:
        ex = _sim_client(sim.base_url, api_key=sim.api_key, secret=sim.api_secret)
        ex.load_markets()
        open_ = candles.column("open")[200].as_py()
        limit_price = float(ex.price_to_precision("BTC/USDT", open_ * 1.01))
        order = ex.create_order("BTC/USDT", "limit", "buy", 0.04, limit_price)
        # Marketable: a quarter fills at once, at the market, not at the limit.
        assert order["status"] == "open"
        assert order["filled"] == 0.01
        lows = candles.column("low").to_numpy()
        expected = 0.01
        for i in range(201, 206):
            sim.advance(HOUR)
            if lows[i] <= limit_price:
                expected = min(0.04, expected + 0.01)
            got = ex.fetch_order(order["id"], "BTC/USDT")
            assert got["filled"] == pytest.approx(expected)
            assert got["status"] == ("closed" if expected >= 0.04 else "open")
        assert expected > 0.01  # the data did trade through the limit in later candles
        fills = ex.fetch_my_trades("BTC/USDT")
        assert sum(_d(t["amount"]) for t in fills) == _d(expected)


def test_async_client_trades(candles: pa.Table) -> None:
    start = candles.column("timestamp")[300].as_py()

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        sim = ExchangeSimulator({"BTC/USDT": candles}, start_ms=start)
        base = await sim.start()
        ex = _sim_client(base, api_key=sim.api_key, secret=sim.api_secret, kind="async")
        try:
            await ex.load_markets()
            order = await ex.create_order(
                "BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "async-1"}
            )
            fetched = await ex.fetch_order(
                None, "BTC/USDT", params={"origClientOrderId": "async-1"}
            )
            return order, fetched
        finally:
            await ex.close()
            await sim.stop()

    order, fetched = asyncio.run(run())
    assert order["status"] == "closed"
    assert fetched["id"] == order["id"]


# ---------------------------------------------------------------- errors


def test_error_codes_map_to_ccxt_exceptions(trading: tuple[ExchangeSimulator, Any]) -> None:
    sim, ex = trading
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "buy", 5)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        ex.private_post_order(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.000015",
                "price": "30000",
            }
        )
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        ex.private_post_order(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": "30000.005",
            }
        )
    # Below min notional: Binance's -1013 "Filter failure: NOTIONAL", which ccxt files under
    # BadRequest (its parent class of InvalidOrder's siblings), exactly as against Binance.
    with pytest.raises(ccxt.BadRequest, match="-1013"):
        ex.create_order("BTC/USDT", "limit", "buy", 0.00001, 30000)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("987654", "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order("987654", "BTC/USDT")
    ex.create_order("BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex.create_order("BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "dup-1"})
    assert len(sim.orders()) == 1


def test_authentication_failures(trading: tuple[ExchangeSimulator, Any]) -> None:
    sim, _ = trading
    wrong_secret = _sim_client(sim.base_url, api_key=sim.api_key, secret="not-the-secret")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        wrong_secret.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        wrong_secret.private_post_order(
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}
        )
    unknown_key = _sim_client(sim.base_url, api_key="someone-else", secret=sim.api_secret)
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        unknown_key.fetch_balance()
    malformed = _sim_client(sim.base_url, api_key="bad key!", secret=sim.api_secret)
    with pytest.raises(ccxt.AuthenticationError, match="-2014"):
        malformed.fetch_balance()
    # ccxt signs with its clock minus timeDifference: two minutes late is outside recvWindow.
    late = _sim_client(
        sim.base_url,
        api_key=sim.api_key,
        secret=sim.api_secret,
        options={"timeDifference": 120_000, "recvWindow": 5_000},
    )
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        late.fetch_balance()
    assert sim.orders() == []


# ---------------------------------------------------------------- faults


def test_rate_limit_fault_answers_429_with_retry_after(
    trading: tuple[ExchangeSimulator, Any],
) -> None:
    sim, ex = trading
    sim.set_faults(rate_limit_next=2, retry_after_s=7)
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        ex.fetch_ticker("BTC/USDT")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(sim.base_url + "/api/v3/ping", timeout=10)  # noqa: S310
    assert raised.value.code == 429
    assert raised.value.headers["Retry-After"] == "7"
    assert json.loads(raised.value.read())["code"] == -1003
    assert ex.fetch_ticker("BTC/USDT")["symbol"] == "BTC/USDT"


def test_5xx_burst_is_exchange_not_available_then_recovers(
    trading: tuple[ExchangeSimulator, Any],
) -> None:
    sim, ex = trading
    state = _admin(sim, "/_sim/faults", {"fail_next": 2, "fail_status": 502})
    assert state["fail_next"] == 2
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable) as exc:
            ex.fetch_balance()
        assert isinstance(exc.value, ccxt.NetworkError)
    assert ex.fetch_balance()["USDT"]["free"] == 10_000
    assert _admin(sim, "/_sim/faults")["fail_next"] == 0


def test_timeout_and_latency_faults_are_request_timeouts(candles: pa.Table) -> None:
    with run_simulator_in_thread({"BTC/USDT": candles}) as sim:
        ex = _sim_client(sim.base_url, timeout_ms=300)
        sim.set_faults(timeout_next=1, hang_s=5)
        with pytest.raises(ccxt.RequestTimeout):
            ex.fetch_time()
        assert ex.fetch_time() == sim.now()
        sim.set_faults(latency_ms=1500)
        with pytest.raises(ccxt.RequestTimeout):
            ex.fetch_time()
        sim.set_faults(latency_ms=20)
        assert ex.fetch_time() == sim.now()


def test_faults_can_target_one_path(trading: tuple[ExchangeSimulator, Any]) -> None:
    sim, ex = trading
    sim.set_faults(fail_next=1, path_prefix="/api/v3/order")
    assert ex.fetch_ticker("BTC/USDT")["last"] > 0
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.create_order("BTC/USDT", "market", "buy", 0.001)
    assert sim.orders() == []  # a 5xx fault refuses before anything is booked


@pytest.mark.parametrize(
    ("mode", "error"), [("503", ccxt.ExchangeNotAvailable), ("close", ccxt.NetworkError)]
)
def test_dropped_answer_leaves_the_order_booked(
    trading: tuple[ExchangeSimulator, Any], mode: str, error: type[Exception]
) -> None:
    sim, ex = trading
    sim.set_faults(drop_next_orders=1, drop_mode=mode)
    with pytest.raises(error):
        ex.create_order("BTC/USDT", "market", "buy", 0.002, params={"clientOrderId": "lost-1"})
    # The client saw an error, yet the exchange filled the order: look it up, do not resend.
    found = ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "lost-1"})
    assert found["status"] == "closed"
    assert found["filled"] == 0.002
    assert [o["clientOrderId"] for o in sim.orders()] == ["lost-1"]
    assert ex.fetch_balance()["BTC"]["free"] > 0.5
    # A naive resend with the same client id is refused instead of buying twice.
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):
        ex.create_order("BTC/USDT", "market", "buy", 0.002, params={"clientOrderId": "lost-1"})
    assert len(sim.orders()) == 1


def test_fault_switches_are_validated(trading: tuple[ExchangeSimulator, Any]) -> None:
    sim, _ = trading
    with pytest.raises(urllib.error.HTTPError) as exc:
        _admin(sim, "/_sim/faults", {"no_such_switch": 1})
    assert exc.value.code == 400
    with pytest.raises(urllib.error.HTTPError):
        _admin(sim, "/_sim/faults", {"drop_mode": "sometimes"})
    assert _admin(sim, "/_sim/faults", {"clear": True})["drop_mode"] == "503"


def test_admin_endpoints_show_orders_balances_and_request_counts(
    trading: tuple[ExchangeSimulator, Any],
) -> None:
    sim, ex = trading
    order = ex.create_order("BTC/USDT", "market", "sell", 0.1, params={"clientOrderId": "adm-1"})
    orders = _admin(sim, "/_sim/orders")
    assert [(o["clientOrderId"], o["apiKey"], o["status"]) for o in orders] == [
        ("adm-1", sim.api_key, "FILLED")
    ]
    balances = _admin(sim, "/_sim/balances")
    assert Decimal(balances["BTC"]["free"]) == Decimal("0.4")
    proceeds = Decimal(order["info"]["cummulativeQuoteQty"]) - Decimal(str(order["fee"]["cost"]))
    assert Decimal(balances["USDT"]["free"]) == Decimal(10_000) + proceeds
    assert _admin(sim, "/_sim/stats")["POST /api/v3/order"] == 1
    with pytest.raises(urllib.error.HTTPError) as exc:
        _admin(sim, "/_sim/clock", {"set_time": 0})  # the clock never goes backwards
    assert exc.value.code == 400
