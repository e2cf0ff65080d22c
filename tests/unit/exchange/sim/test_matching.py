"""The simulator's matching engine: exact balances, limit fills on the price path, filters."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from cryptoorchestrator.platform.exchange.sim.accounts import SimAccount, SimOrder
from cryptoorchestrator.platform.exchange.sim.market import ReplayMarket, SymbolSpec
from cryptoorchestrator.platform.exchange.sim.matching import MatchingEngine
from cryptoorchestrator.platform.exchange.sim.wire import BinanceReject
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

H = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % H)
SPEC = SymbolSpec(
    symbol="BTC/USDT",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    max_qty=Decimal("1000"),
    min_notional=Decimal("5"),
)
# Rising 100 -> 95 -> 110 -> 105, falling 105 -> 106 -> 90 -> 92, rising 92 -> 91 -> 100 -> 99.
CANDLES = [
    (T0, 100.0, 110.0, 95.0, 105.0, 10.0),
    (T0 + H, 105.0, 106.0, 90.0, 92.0, 12.0),
    (T0 + 2 * H, 92.0, 100.0, 91.0, 99.0, 8.0),
]


def _engine(**kwargs: object) -> tuple[MatchingEngine, SimAccount]:
    cols = list(zip(*CANDLES, strict=True))
    table = pa.Table.from_arrays([pa.array(c) for c in cols], schema=OHLCV_SCHEMA)
    engine = MatchingEngine({"BTCUSDT": ReplayMarket(SPEC, table)}, start_ms=T0, **kwargs)  # type: ignore[arg-type]
    account = engine.add_account("k", "s", {"USDT": Decimal("1000"), "BTC": Decimal("1")})
    return engine, account


def _order(engine: MatchingEngine, account: SimAccount, now: int, **params: str) -> object:
    base = (
        {"symbol": "BTCUSDT", "timeInForce": "GTC"}
        if params.get("type") != "MARKET"
        else {"symbol": "BTCUSDT"}
    )
    return engine.place_order(account, {**base, **params}, now)


def test_market_buy_moves_balances_exactly_with_fee_in_base() -> None:
    engine, acct = _engine()
    order = engine.place_order(
        acct, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.5"}, T0
    )
    assert order.status == "FILLED"
    assert order.fills[0].price == Decimal("100.00")
    assert acct.balance("USDT") == (Decimal("950.00"), Decimal(0))
    assert acct.balance("BTC")[0] == Decimal("1.5") - Decimal("0.0005")
    assert order.fills[0].commission_asset == "BTC"
    assert order.cum_quote == Decimal("50.00")


def test_market_sell_pays_fee_in_quote_and_slippage_goes_against_trader() -> None:
    engine, acct = _engine(slippage_bps=Decimal(25))
    sell = engine.place_order(
        acct, {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "1"}, T0
    )
    buy = engine.place_order(
        acct, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.1"}, T0
    )
    assert sell.fills[0].price == Decimal("99.75")
    assert buy.fills[0].price == Decimal("100.25")
    fee = (Decimal("99.75") * Decimal("0.001")).quantize(Decimal("0.00000001"))
    assert sell.fills[0].commission == fee
    usdt = Decimal(1000) + Decimal("99.75") - fee - Decimal("10.025")
    assert acct.balance("USDT")[0] == usdt
    assert acct.balance("BTC")[0] == Decimal("0.1") - Decimal("0.0001")


def test_limit_buy_locks_funds_and_fills_where_the_path_crosses() -> None:
    engine, acct = _engine()
    order = engine.place_order(
        acct,
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "2",
            "price": "93",
        },
        T0,
    )
    assert order.status == "NEW"
    assert acct.balance("USDT") == (Decimal(1000) - Decimal(186), Decimal(186))
    engine.process_until(T0 + H)  # the first candle's low is 95: no fill
    assert order.status == "NEW"
    engine.process_until(T0 + 2 * H)
    assert order.status == "FILLED"
    fill = order.fills[0]
    assert fill.price == Decimal(93)
    assert fill.is_maker is True
    # Falling candle 105 -> 106 -> 90: 93 is reached 13/16 of the way down the second leg.
    expected = T0 + H + int((1 / 3 + (13 / 16) / 3) * H)
    assert abs(fill.time - expected) <= 1
    assert acct.balance("USDT") == (Decimal(814), Decimal(0))
    assert acct.balance("BTC")[0] == Decimal(1) + Decimal(2) - Decimal("0.002")


def test_partial_fills_a_fraction_per_candle() -> None:
    engine, acct = _engine(partial_fill_ratio=Decimal("0.5"))
    order = engine.place_order(
        acct,
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.8",
            "price": "96",
        },
        T0,
    )
    locked = Decimal("0.8") * 96
    assert acct.balance("USDT") == (Decimal(1000) - locked, locked)
    engine.process_until(T0 + H // 2)
    engine.process_until(T0 + H - 1)
    assert order.status == "PARTIALLY_FILLED"
    assert order.executed_qty == Decimal("0.4")
    assert acct.balance("USDT") == (Decimal(1000) - locked, locked / 2)
    engine.process_until(T0 + 3 * H)
    assert order.status == "FILLED"
    assert [f.qty for f in order.fills] == [Decimal("0.4"), Decimal("0.4")]
    assert order.fills[0].time < T0 + H <= order.fills[1].time
    assert acct.balance("USDT") == (Decimal(1000) - locked, Decimal(0))
    assert acct.balance("BTC")[0] == Decimal("1.8") - sum(f.commission for f in order.fills)


def test_marketable_limit_fills_at_once_at_the_better_price() -> None:
    engine, acct = _engine()
    order = engine.place_order(
        acct,
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "1",
            "price": "101",
        },
        T0,
    )
    assert order.status == "FILLED"
    assert order.fills[0].price == Decimal(100)
    assert order.fills[0].is_maker is False
    assert acct.balance("USDT") == (Decimal(900), Decimal(0))
    with pytest.raises(BinanceReject) as exc:
        engine.place_order(
            acct,
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT_MAKER",
                "quantity": "1",
                "price": "101",
            },
            T0,
        )
    assert exc.value.code == -2010


def test_cancel_returns_locked_funds_and_final_orders_cannot_be_cancelled() -> None:
    engine, acct = _engine()
    order = engine.place_order(
        acct,
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "1.234",
            "price": "50.01",
            "newClientOrderId": "c1",
        },
        T0,
    )
    engine.cancel_order(acct, "BTCUSDT", None, "c1", T0 + 1)
    assert order.status == "CANCELED"
    assert acct.balance("USDT") == (Decimal(1000), Decimal(0))
    with pytest.raises(BinanceReject) as exc:
        engine.cancel_order(acct, "BTCUSDT", str(order.order_id), None, T0 + 2)
    assert exc.value.code == -2011
    with pytest.raises(BinanceReject) as exc:
        engine.find_order(acct, "BTCUSDT", "999", None)
    assert exc.value.code == -2013


@pytest.mark.parametrize(
    ("params", "code", "word"),
    [
        ({"quantity": "0.0015", "price": "100"}, -1013, "LOT_SIZE"),
        ({"quantity": "0.1", "price": "100.005"}, -1013, "PRICE_FILTER"),
        ({"quantity": "0.001", "price": "100"}, -1013, "NOTIONAL"),
        ({"quantity": "11", "price": "100"}, -2010, "insufficient balance"),
        ({"quantity": "0.1"}, -1102, "price"),
        ({"quantity": "abc", "price": "100"}, -1100, "quantity"),
        ({"quantity": "0.1", "price": "100", "symbol": "ETHUSDT"}, -1121, "Invalid symbol"),
        ({"quantity": "0.1", "price": "100", "newClientOrderId": "bad id!"}, -1100, "newClient"),
    ],
)
def test_rejections_use_binance_codes(params: dict[str, str], code: int, word: str) -> None:
    engine, acct = _engine()
    with pytest.raises(BinanceReject) as exc:
        engine.place_order(
            acct,
            {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", **params},
            T0,
        )
    assert exc.value.code == code
    assert word in exc.value.msg
    assert acct.balance("USDT") == (Decimal(1000), Decimal(0))
    assert acct.orders == {}


def test_client_order_id_is_unique_for_the_account() -> None:
    engine, acct = _engine()
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": "0.1",
        "newClientOrderId": "bot1-0001",
    }
    first = engine.place_order(acct, params, T0)
    with pytest.raises(BinanceReject) as exc:
        engine.place_order(acct, params, T0 + 1)
    assert exc.value.code == -2010
    assert exc.value.msg == "Duplicate order sent."
    assert engine.find_order(acct, "BTCUSDT", None, "bot1-0001") is first
    assert len(acct.trades) == 1


def test_orders_after_the_data_ends_are_refused() -> None:
    engine, acct = _engine()
    with pytest.raises(BinanceReject) as exc:
        engine.place_order(
            acct,
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.1"},
            T0 + 3 * H,
        )
    assert exc.value.msg == "Market is closed."


# ------------------------------------------------------------------------- stop-loss orders


def _engine_on(
    candles: list[tuple[int, float, float, float, float, float]],
) -> tuple[MatchingEngine, SimAccount]:
    cols = list(zip(*candles, strict=True))
    table = pa.Table.from_arrays([pa.array(c) for c in cols], schema=OHLCV_SCHEMA)
    engine = MatchingEngine({"BTCUSDT": ReplayMarket(SPEC, table)}, start_ms=T0)
    account = engine.add_account("k", "s", {"USDT": Decimal("1000"), "BTC": Decimal("1")})
    return engine, account


def _stop(engine: MatchingEngine, account: SimAccount, now: int, **params: str) -> SimOrder:
    base = {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "0.5"}
    return engine.place_order(account, {**base, **params}, now)


def test_stop_loss_rests_locked_and_fills_at_its_stop_when_the_path_reaches_it() -> None:
    engine, acct = _engine()
    order = _stop(engine, acct, T0, stopPrice="96.50", newClientOrderId="stop-1")
    assert order.status == "NEW"
    assert order.to_wire()["stopPrice"] == "96.50000000"
    assert acct.balance("BTC") == (Decimal("0.5"), Decimal("0.5"))
    engine.process_until(T0 + H)
    assert order.status == "FILLED"
    fill = order.fills[0]
    assert (fill.price, fill.qty, fill.is_maker) == (Decimal("96.50"), Decimal("0.5"), False)
    # Falling 100 -> 95 over the first third of the candle: 96.5 is reached at 0.7 of it.
    assert abs(fill.time - (T0 + 0.7 * H / 3)) <= 1
    assert acct.balance("BTC") == (Decimal("0.5"), Decimal(0))
    fee = (Decimal("48.25") * Decimal("0.001")).quantize(Decimal("0.00000001"))
    assert acct.balance("USDT") == (Decimal(1000) + Decimal("48.25") - fee, Decimal(0))


def test_stop_loss_fills_at_the_open_of_a_candle_that_gaps_through_it() -> None:
    engine, acct = _engine_on(
        [(T0, 100.0, 101.0, 99.0, 100.5, 1.0), (T0 + H, 95.0, 96.0, 94.0, 95.5, 1.0)]
    )
    order = _stop(engine, acct, T0, stopPrice="98")
    engine.process_until(T0 + H - 1)
    assert order.status == "NEW"
    engine.process_until(T0 + H + 1)
    assert order.status == "FILLED"
    assert (order.fills[0].price, order.fills[0].time) == (Decimal("95.00"), T0 + H)


def test_buy_stop_triggers_on_a_rising_price_and_locks_quote() -> None:
    engine, acct = _engine()
    order = _stop(engine, acct, T0 + H // 2, side="BUY", stopPrice="108", quantity="1")
    assert acct.balance("USDT") == (Decimal(892), Decimal(108))
    engine.process_until(T0 + H)
    assert order.status == "FILLED"
    assert order.fills[0].price == Decimal("108")
    assert acct.balance("USDT") == (Decimal(892), Decimal(0))


def test_cancelled_stop_releases_its_funds_and_never_fills() -> None:
    engine, acct = _engine()
    order = _stop(engine, acct, T0, stopPrice="96.50", newClientOrderId="stop-2")
    cancelled = engine.cancel_order(acct, "BTCUSDT", None, "stop-2", T0 + 1)
    assert cancelled is order
    assert order.status == "CANCELED"
    engine.process_until(T0 + 3 * H - 1)
    assert order.fills == []
    assert acct.balance("BTC") == (Decimal(1), Decimal(0))
    # Found again by its client order id (a restarted bot reconciles it so).
    assert engine.find_order(acct, "BTCUSDT", None, "stop-2") is order


@pytest.mark.parametrize(
    ("params", "code", "word"),
    [
        ({"stopPrice": "100"}, -2010, "trigger immediately"),
        ({"stopPrice": "99", "side": "BUY"}, -2010, "trigger immediately"),
        ({}, -1102, "stopPrice"),
        ({"stopPrice": "96.505"}, -1013, "PRICE_FILTER"),
        ({"stopPrice": "96", "quantity": "5"}, -2010, "insufficient"),
    ],
)
def test_stop_loss_rejections_use_binance_codes(
    params: dict[str, str], code: int, word: str
) -> None:
    engine, acct = _engine()
    with pytest.raises(BinanceReject) as info:
        _stop(engine, acct, T0, **params)
    assert info.value.code == code
    assert word in info.value.msg
