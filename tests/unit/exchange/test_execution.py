"""Order preparation (rounding, lot size, min notional), ccxt error mapping, order parsing."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptoorchestrator.platform import errors
from cryptoorchestrator.platform.exchange.ccxt_client import (
    RetryPolicy,
    market_info,
    parse_balances,
    parse_order,
)
from cryptoorchestrator.platform.exchange.errors_map import exchange_message, map_ccxt_error
from cryptoorchestrator.platform.exchange.execution import (
    MarketInfo,
    OrderRejected,
    OrderRequest,
    PreparedOrder,
    Ticker,
    prepare_order,
    to_decimal,
)
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType

BTC = MarketInfo(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.00001"),
    price_tick=Decimal("0.01"),
    min_amount=Decimal("0.00001"),
    max_amount=Decimal("9000"),
    min_notional=Decimal("5"),
    min_price=Decimal("0.01"),
    max_price=Decimal("1000000"),
)


def limit(amount: str, price: str, side: str = "buy") -> OrderRequest:
    return OrderRequest(
        "BTC/USDT", OrderSide(side), OrderType.LIMIT, Decimal(amount), "c-1", Decimal(price)
    )


def market(amount: str, side: str = "buy") -> OrderRequest:
    return OrderRequest("btc-usdt", OrderSide(side), OrderType.MARKET, Decimal(amount), "c-2")


# ---------------------------------------------------------------- prepare_order


def test_limit_order_is_rounded_to_step_and_tick() -> None:
    prepared = prepare_order(BTC, limit("0.0012399", "60000.005"))
    assert isinstance(prepared, PreparedOrder)
    assert prepared.amount == Decimal("0.00123")  # amounts round down: never more than asked
    assert str(prepared.amount) == "0.00123"
    assert prepared.price == Decimal("60000.00")  # half-even to the tick
    assert prepared.notional == Decimal("0.00123") * Decimal("60000.00")


def test_below_lot_size_is_a_rejection_value_not_an_exception() -> None:
    rejected = prepare_order(BTC, limit("0.000009", "60000"))
    assert isinstance(rejected, OrderRejected)
    assert (rejected.code, rejected.client_order_id, rejected.sent) == ("lot_size", "c-1", False)
    assert "0.00001" in rejected.reason


def test_above_max_amount_is_refused() -> None:
    rejected = prepare_order(BTC, limit("9000.1", "1"))
    assert isinstance(rejected, OrderRejected)
    assert rejected.code == "lot_size"


def test_below_min_notional_is_refused_with_the_numbers() -> None:
    rejected = prepare_order(BTC, limit("0.00008", "60000"))  # 4.8 USDT
    assert isinstance(rejected, OrderRejected)
    assert rejected.code == "min_notional"
    assert "4.8" in rejected.reason
    assert "5" in rejected.reason
    assert isinstance(prepare_order(BTC, limit("0.00009", "60000")), PreparedOrder)  # 5.4


def test_market_order_checks_notional_against_the_reference_price() -> None:
    order = market("0.0001")
    assert isinstance(prepare_order(BTC, order, Decimal("60000")), PreparedOrder)
    low = prepare_order(BTC, order, Decimal("40000"))
    assert isinstance(low, OrderRejected)
    assert low.code == "min_notional"
    none = prepare_order(BTC, order, None)
    assert isinstance(none, OrderRejected)
    assert none.code == "no_reference_price"
    no_limit = MarketInfo("BTC/USDT", "BTC", "USDT", amount_step=Decimal("0.001"))
    assert isinstance(prepare_order(no_limit, order, None), OrderRejected)  # rounds to 0
    assert isinstance(prepare_order(no_limit, market("0.001"), None), PreparedOrder)


def test_price_filters_and_inactive_market() -> None:
    assert prepare_order(BTC, limit("1", "0.004")).code == "price_filter"  # type: ignore[union-attr]
    assert prepare_order(BTC, limit("0.0001", "2000000")).code == "price_filter"  # type: ignore[union-attr]
    closed = MarketInfo("BTC/USDT", "BTC", "USDT", active=False)
    assert prepare_order(closed, limit("1", "1")).code == "market_inactive"  # type: ignore[union-attr]


@given(
    amount=st.decimals(min_value="0.00001", max_value="100", places=9),
    price=st.decimals(min_value="100", max_value="100000", places=4),
)
def test_prepared_orders_always_pass_the_exchange_filters(amount: Decimal, price: Decimal) -> None:
    result = prepare_order(BTC, limit(str(amount), str(price)))
    if isinstance(result, OrderRejected):
        assert result.code in ("lot_size", "min_notional")
        return
    assert result.amount <= amount
    assert amount - result.amount < BTC.amount_step  # type: ignore[operator]
    assert result.amount % BTC.amount_step == 0  # type: ignore[operator]
    assert result.price is not None
    assert result.price % BTC.price_tick == 0
    assert abs(result.price - price) <= BTC.price_tick / 2  # type: ignore[operator]
    assert result.amount * result.price >= BTC.min_notional  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"amount": Decimal(0)}, "amount"),
        ({"amount": Decimal("-1")}, "amount"),
        ({"price": None}, "price"),
        ({"price": Decimal(0)}, "price"),
        ({"client_order_id": "has space"}, "client_order_id"),
        ({"client_order_id": "x" * 37}, "client_order_id"),
        ({"client_order_id": ""}, "client_order_id"),
    ],
)
def test_order_request_refuses_malformed_input(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "amount": Decimal(1),
        "client_order_id": "bot7-000001",
        "price": Decimal(1),
    }
    args.update(kwargs)
    with pytest.raises(errors.InvalidInputError) as info:
        OrderRequest(**args)  # type: ignore[arg-type]
    assert info.value.field == field


def test_order_request_normalises_symbol_and_enums() -> None:
    req = OrderRequest("eth_usdt", "sell", "market", Decimal("1.5"), "a:b/c.d_e-f")  # type: ignore[arg-type]
    assert (req.symbol, req.side, req.type) == ("ETH/USDT", OrderSide.SELL, OrderType.MARKET)


def test_to_decimal_keeps_the_exchange_text_of_floats() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal(68418.59) == Decimal("68418.59")
    assert to_decimal("0.00120000") == Decimal("0.0012")
    assert to_decimal(None) is None
    assert to_decimal(3) == Decimal(3)


def test_ticker_price_for_side() -> None:
    t = Ticker("BTC/USDT", last=Decimal(100), bid=Decimal(99), ask=Decimal(101))
    assert (t.price_for(OrderSide.BUY), t.price_for(OrderSide.SELL)) == (101, 99)
    bare = Ticker("BTC/USDT", last=Decimal(100), bid=Decimal(0))
    assert (bare.price_for(OrderSide.BUY), bare.price_for(OrderSide.SELL)) == (100, 100)


# ---------------------------------------------------------------- error mapping

BODY = '{"code":-2010,"msg":"Account has insufficient balance for requested action."}'


@pytest.mark.parametrize(
    ("ccxt_error", "ours", "retryable"),
    [
        (ccxt.NetworkError, errors.RetryableExchangeError, True),
        (ccxt.RequestTimeout, errors.RetryableExchangeError, True),
        (ccxt.ExchangeNotAvailable, errors.RetryableExchangeError, True),
        (ccxt.OnMaintenance, errors.RetryableExchangeError, True),
        (ccxt.RateLimitExceeded, errors.RateLimitedError, True),
        (ccxt.DDoSProtection, errors.RateLimitedError, True),
        (ccxt.InvalidNonce, errors.RetryableExchangeError, True),
        (ccxt.BadResponse, errors.RetryableExchangeError, True),
        (ccxt.NullResponse, errors.RetryableExchangeError, True),
        (ccxt.AuthenticationError, errors.AuthenticationError, False),
        (ccxt.PermissionDenied, errors.AuthenticationError, False),
        (ccxt.AccountSuspended, errors.AuthenticationError, False),
        (ccxt.InsufficientFunds, errors.InsufficientFundsError, False),
        (ccxt.InvalidOrder, errors.InvalidOrderError, False),
        (ccxt.DuplicateOrderId, errors.InvalidOrderError, False),
        (ccxt.OrderImmediatelyFillable, errors.InvalidOrderError, False),
        (ccxt.OrderNotFound, errors.OrderNotFoundError, False),
        (ccxt.BadSymbol, errors.InvalidOrderError, False),
        (ccxt.BadRequest, errors.FatalExchangeError, False),
        (ccxt.NotSupported, errors.FatalExchangeError, False),
        (ccxt.ExchangeError, errors.FatalExchangeError, False),
    ],
)
def test_ccxt_errors_map_to_our_hierarchy_keeping_the_message(
    ccxt_error: type[Exception], ours: type[errors.ExchangeError], retryable: bool
) -> None:
    mapped = map_ccxt_error(ccxt_error("binance " + BODY), action="create order BTC/USDT")
    assert type(mapped) is ours
    assert mapped.retryable is retryable
    assert isinstance(
        mapped, errors.RetryableExchangeError if retryable else errors.FatalExchangeError
    )
    assert mapped.exchange_message is not None
    assert "Account has insufficient balance for requested action." in mapped.exchange_message
    assert "-2010" in mapped.exchange_message
    assert str(mapped).startswith("create order BTC/USDT: ")


def test_plain_text_and_transport_errors() -> None:
    assert exchange_message(ccxt.ExchangeNotAvailable("binance 503 Service Unavailable")) == (
        "503 Service Unavailable"
    )
    mapped = map_ccxt_error(TimeoutError("timed out"))
    assert type(mapped) is errors.RetryableExchangeError
    already = errors.InsufficientFundsError("x")
    assert map_ccxt_error(already) is already


# ---------------------------------------------------------------- parsing ccxt answers


def test_market_info_from_ccxt_tick_size_and_decimal_places_markets() -> None:
    raw = {
        "symbol": "BTC/USDT",
        "base": "BTC",
        "quote": "USDT",
        "active": True,
        "precision": {"amount": 1e-05, "price": 0.01},
        "limits": {
            "amount": {"min": 1e-05, "max": 9000.0},
            "cost": {"min": 5.0},
            "price": {"min": 0.01, "max": None},
        },
    }
    info = market_info(raw, 4)
    assert (info.amount_step, info.price_tick) == (Decimal("0.00001"), Decimal("0.01"))
    assert (info.min_notional, info.max_price) == (Decimal(5), None)
    places = market_info({**raw, "precision": {"amount": 5, "price": 2}}, 2)
    assert (places.amount_step, places.price_tick) == (Decimal("1E-5"), Decimal("0.01"))


def test_parse_order_prefers_exact_exchange_strings_and_maps_status() -> None:
    raw = {
        "id": "42",
        "clientOrderId": "cancel-42",
        "symbol": "BTC/USDT",
        "type": "limit",
        "side": "buy",
        "status": "open",
        "amount": 0.003,
        "filled": 0.001,
        "price": 60000.1,
        "cost": 60.0001,
        "timestamp": 1700000000000,
        "info": {
            "origClientOrderId": "bot-1",
            "origQty": "0.00300000",
            "executedQty": "0.00100000",
            "cummulativeQuoteQty": "60.00010000",
            "price": "60000.10000000",
        },
        "trades": [
            {
                "id": 7,
                "price": 60000.1,
                "amount": 0.001,
                "fee": {"cost": 1e-06, "currency": "BTC"},
                "info": {
                    "price": "60000.10",
                    "qty": "0.00100000",
                    "commission": "0.00000100",
                    "commissionAsset": "BTC",
                },
            },
        ],
    }
    order = parse_order(raw, BTC)
    assert order.client_order_id == "bot-1"
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert (order.amount, order.filled, order.remaining) == (
        Decimal("0.003"),
        Decimal("0.001"),
        Decimal("0.002"),
    )
    assert order.cost == Decimal("60.0001")
    assert order.average_price == Decimal("60000.1")
    assert order.fills[0].fee == Decimal("0.000001")
    assert order.fee_currency == "BTC"
    assert order.fills[0].order_id == "42"
    for ccxt_status, ours in [
        ("closed", OrderStatus.FILLED),
        ("canceled", OrderStatus.CANCELED),
        ("expired", OrderStatus.CANCELED),
        ("rejected", OrderStatus.REJECTED),
    ]:
        assert parse_order({**raw, "status": ccxt_status}, BTC).status is ours
    fresh = parse_order({**raw, "info": {}, "filled": 0.0, "cost": 0.0, "trades": []}, BTC)
    assert fresh.status is OrderStatus.OPEN
    assert fresh.average_price is None


def test_parse_balances_keeps_non_zero_assets_exactly() -> None:
    raw = {"free": {"BTC": 0.1, "USDT": 9931.8451, "ETH": 0.0}, "used": {"BTC": 0.02, "ETH": 0.0}}
    assert set(parse_balances(raw)) == {"BTC", "USDT"}
    assert parse_balances(raw)["BTC"].total == Decimal("0.12")
    assert parse_balances(raw)["USDT"].free == Decimal("9931.8451")


def test_retry_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=0.5, max_delay_s=3, factor=2)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
