"""The execution clients with ccxt's real ``binance`` class against the simulator on loopback.

Covers the order lifecycle (create, fill, partial fill, cancel, fetch by client order id), error
codes mapped to our hierarchy, bad signatures, answers lost after the order was booked (exactly
one order afterwards), the circuit breaker under 5xx and timeouts, ``test_connection``, and the
paper broker on the simulator's prices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import ccxt
import pyarrow as pa
import pytest

from cryptoorchestrator.platform import errors
from cryptoorchestrator.platform.exchange import accounts
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient, RetryPolicy
from cryptoorchestrator.platform.exchange.ccxt_factory import ClientKind, build_ccxt_client
from cryptoorchestrator.platform.exchange.circuit import CircuitBreaker, CircuitState
from cryptoorchestrator.platform.exchange.errors_map import map_ccxt_error
from cryptoorchestrator.platform.exchange.execution import (
    ExchangeOrder,
    OrderRejected,
    OrderRequest,
)
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.exchange.sim import (
    ExchangeSimulator,
    run_simulator_in_thread,
)
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import ExchangeAccount, User

HOUR = 3_600_000
T = TypeVar("T")


def _sim_client(base_url: str, *, kind: ClientKind = "sync", **kwargs: Any) -> Any:
    """Return ccxt's real ``binance`` at the simulator, unthrottled (tests pace themselves)."""
    return build_ccxt_client("binance", base_url, kind=kind, enable_rate_limit=False, **kwargs)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


@pytest.fixture
def sim(candles: pa.Table) -> Iterator[ExchangeSimulator]:
    """A fresh simulator per test, its clock frozen at candle 2000 (tests step it)."""
    start = _ms(candles.column("timestamp")[2000].as_py()) + 60_000
    with run_simulator_in_thread({"BTC/USDT": candles}, start_ms=start) as s:
        yield s


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def client(
    sim: ExchangeSimulator,
    *,
    secret: str | None = None,
    api_key: str | None = None,
    timeout_ms: int = 5_000,
    breaker: CircuitBreaker | None = None,
    attempts: int = 3,
) -> CcxtExecutionClient:
    ex = _sim_client(
        sim.base_url,
        api_key=api_key or sim.api_key,
        secret=secret or sim.api_secret,
        kind="async",
        timeout_ms=timeout_ms,
    )
    return CcxtExecutionClient(
        ex,
        account_key="sim:test",
        breaker=breaker or CircuitBreaker("sim:test", failure_threshold=50),
        retry=RetryPolicy(attempts=attempts, base_delay_s=0.01, max_delay_s=0.05),
        settle_s=0.2,
    )


def run(c: CcxtExecutionClient, scenario: Callable[[CcxtExecutionClient], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await scenario(c)
        finally:
            await c.close()

    return asyncio.run(main())


def order(
    side: str, otype: str, amount: str, cid: str, price: Decimal | None = None
) -> OrderRequest:
    return OrderRequest("BTC/USDT", OrderSide(side), OrderType(otype), Decimal(amount), cid, price)


def sim_orders(sim: ExchangeSimulator, cid: str) -> list[dict[str, Any]]:
    return [o for o in sim.orders() if o["clientOrderId"] == cid]


# ---------------------------------------------------------------- lifecycle


def test_market_order_fills_with_exact_decimals(sim: ExchangeSimulator) -> None:
    async def scenario(c: CcxtExecutionClient) -> tuple[Any, ...]:
        placed = await c.create_order(order("buy", "market", "0.0123456", "life-mkt-1"))
        fetched = await c.fetch_order("BTC/USDT", client_order_id="life-mkt-1")
        assert isinstance(placed, ExchangeOrder)
        by_id = await c.fetch_order("BTC/USDT", order_id=placed.order_id)
        trades = await c.fetch_my_trades("BTC/USDT", order_id=placed.order_id)
        return placed, fetched, by_id, trades, await c.fetch_balances()

    placed, fetched, by_id, trades, balances = run(client(sim), scenario)
    assert placed.status is OrderStatus.FILLED
    assert placed.amount == Decimal("0.01234")  # rounded down to the 0.00001 lot step
    assert placed.client_order_id == "life-mkt-1"
    assert fetched == by_id
    assert fetched.status is OrderStatus.FILLED
    assert fetched.filled == Decimal("0.01234")
    wire = sim_orders(sim, "life-mkt-1")[0]
    assert Decimal(wire["cummulativeQuoteQty"]) == placed.cost
    assert [t.amount for t in trades] == [Decimal("0.01234")]
    fee = Decimal("0.01234") * Decimal("0.001")
    assert trades[0].fee == fee
    assert trades[0].fee_currency == "BTC"
    sim_bal = sim.balances()
    assert balances["BTC"].free == sim_bal["BTC"][0] == Decimal("0.01234") - fee
    assert balances["USDT"].free == Decimal(10_000) - placed.cost


def _limit_below(sim: ExchangeSimulator, candles: pa.Table) -> Decimal:
    """A buy price under the current one that a later candle's low reaches."""
    now = sim.now()
    ts = [_ms(v) for v in candles.column("timestamp").to_pylist()]
    i = next(k for k, t in enumerate(ts) if t > now)
    lows = candles.column("low").to_pylist()
    current = Decimal(str(sim.engine.markets["BTCUSDT"].price(now)))
    target = current * Decimal("0.995")
    assert any(Decimal(str(lo)) < target for lo in lows[i : i + 200])  # the data goes there
    return target.quantize(Decimal("0.01"))


def test_limit_order_rests_fills_partially_and_is_cancelled(candles: pa.Table) -> None:
    start = _ms(candles.column("timestamp")[2000].as_py()) + 60_000
    with run_simulator_in_thread(
        {"BTC/USDT": candles}, start_ms=start, partial_fill_ratio="0.25"
    ) as sim:
        price = _limit_below(sim, candles)

        async def scenario(c: CcxtExecutionClient) -> tuple[Any, ...]:
            placed = await c.create_order(order("buy", "limit", "0.004", "life-lim-1", price))
            open_before = await c.fetch_open_orders("BTC/USDT")
            seen = []
            for _ in range(200):
                sim.advance(HOUR)
                now = await c.fetch_order("BTC/USDT", client_order_id="life-lim-1")
                assert now is not None
                seen.append(now.status)
                if now.filled > 0:
                    break
            partial = now
            cancelled = await c.cancel_order("BTC/USDT", client_order_id="life-lim-1")
            again = await c.cancel_order("BTC/USDT", client_order_id="life-lim-1")
            trades = await c.fetch_my_trades("BTC/USDT", order_id=placed.order_id)  # type: ignore[union-attr]
            return (
                placed,
                open_before,
                partial,
                cancelled,
                again,
                trades,
                await c.fetch_open_orders(),
            )

        placed, open_before, partial, cancelled, again, trades, open_after = run(
            client(sim), scenario
        )
        assert isinstance(placed, ExchangeOrder)
        assert placed.status is OrderStatus.OPEN
        assert placed.price == price
        assert [o.client_order_id for o in open_before] == ["life-lim-1"]
        assert partial.status is OrderStatus.PARTIALLY_FILLED
        # A quarter of the order per candle the price trades through; one step may span two.
        assert partial.filled in (Decimal("0.001"), Decimal("0.002"), Decimal("0.003"))
        assert cancelled.status is OrderStatus.CANCELED
        assert cancelled.client_order_id == "life-lim-1"
        assert cancelled.filled == partial.filled
        assert again is not None
        assert again.status is OrderStatus.CANCELED
        assert {t.price for t in trades} == {price}
        assert sum(t.amount for t in trades) == partial.filled
        assert all(t.amount == Decimal("0.001") for t in trades)
        assert open_after == []
        usdt = sim.balances()["USDT"]
        assert usdt[1] == 0  # nothing stays locked after the cancel
        assert usdt[0] == Decimal(10_000) - price * partial.filled


def test_stop_loss_order_rests_is_found_by_client_id_and_fills_at_its_stop(
    sim: ExchangeSimulator, candles: pa.Table
) -> None:
    """A Binance spot STOP_LOSS sent through ccxt: resting with its stop price, found again
    by client order id (a restarted bot's reconciliation), filled at the stop price (or at the
    open of a candle that gaps through it); a second one is cancelled and releases its BTC."""
    now = sim.now()
    ts = [_ms(v) for v in candles.column("timestamp").to_pylist()]
    i = next(k for k, t in enumerate(ts) if t > now)
    lows = candles.column("low").to_pylist()
    opens = candles.column("open").to_pylist()
    current = Decimal(str(sim.engine.markets["BTCUSDT"].price(now)))
    stop = (current * Decimal("0.995")).quantize(Decimal("0.01"))
    hit = next(k for k in range(i, len(lows)) if Decimal(str(lows[k])) <= stop)
    expected = min(stop, Decimal(str(opens[hit])))

    async def scenario(c: CcxtExecutionClient) -> tuple[Any, ...]:
        await c.create_order(order("buy", "market", "0.01", "stop-buy"))
        request = OrderRequest(
            "BTC/USDT",
            OrderSide.SELL,
            OrderType.STOP_LOSS,
            Decimal("0.005"),
            "stop-1",
            stop_price=stop,
        )
        placed = await c.create_order(request)
        spare = OrderRequest(
            "BTC/USDT",
            OrderSide.SELL,
            OrderType.STOP_LOSS,
            Decimal("0.004"),
            "stop-2",
            stop_price=stop - Decimal("1000"),
        )
        await c.create_order(spare)
        found = await c.fetch_order("BTC/USDT", client_order_id="stop-1")
        cancelled = await c.cancel_order("BTC/USDT", client_order_id="stop-2")
        sim.set_time(ts[hit] + HOUR)
        filled = await c.fetch_order("BTC/USDT", client_order_id="stop-1")
        return placed, found, cancelled, filled

    placed, found, cancelled, filled = run(client(sim), scenario)
    assert isinstance(placed, ExchangeOrder)
    assert placed.type is OrderType.STOP_LOSS
    assert placed.status is OrderStatus.OPEN
    assert found is not None
    assert (found.stop_price, found.status) == (stop, OrderStatus.OPEN)
    assert sim_orders(sim, "stop-1")[0]["type"] == "STOP_LOSS"
    assert cancelled is not None
    assert cancelled.status is OrderStatus.CANCELED
    assert filled is not None
    assert filled.status is OrderStatus.FILLED
    assert filled.average_price == expected
    assert filled.type is OrderType.STOP_LOSS
    assert sim.balances()["BTC"][1] == 0


def test_unknown_orders_are_none_not_errors(sim: ExchangeSimulator) -> None:
    async def scenario(c: CcxtExecutionClient) -> tuple[Any, ...]:
        return (
            await c.fetch_order("BTC/USDT", client_order_id="never-sent"),
            await c.fetch_order("BTC/USDT", order_id="987654"),
            await c.cancel_order("BTC/USDT", client_order_id="never-sent"),
        )

    assert run(client(sim), scenario) == (None, None, None)


# ---------------------------------------------------------------- refusals and errors


def test_refusals_come_back_as_values(sim: ExchangeSimulator) -> None:
    async def scenario(c: CcxtExecutionClient) -> tuple[Any, ...]:
        poor = await c.create_order(order("buy", "market", "5", "rej-1"))
        tiny = await c.create_order(order("buy", "market", "0.00001", "rej-2"))
        return poor, tiny

    poor, tiny = run(client(sim), scenario)
    assert isinstance(poor, OrderRejected)
    assert (poor.code, poor.sent) == ("insufficient_funds", True)
    assert poor.exchange_message is not None
    assert "insufficient balance" in poor.exchange_message
    assert isinstance(tiny, OrderRejected)
    assert (tiny.code, tiny.sent) == ("min_notional", False)
    assert sim_orders(sim, "rej-2") == []  # refused before sending
    assert sim.stats["POST /api/v3/order"] == 1


def test_bad_signature_and_unknown_key_raise_authentication_errors(sim: ExchangeSimulator) -> None:
    async def balances(c: CcxtExecutionClient) -> Any:
        return await c.fetch_balances()

    with pytest.raises(errors.AuthenticationError) as bad_sig:
        run(client(sim, secret="not-the-secret"), balances)
    assert "-1022" in (bad_sig.value.exchange_message or "")
    with pytest.raises(errors.AuthenticationError) as bad_key:
        run(client(sim, api_key="unknown-key"), balances)
    assert "-2015" in (bad_key.value.exchange_message or "")


def _raw_error(
    sim: ExchangeSimulator, call: Callable[[Any], Any], faults: dict[str, Any] | None
) -> errors.ExchangeError:
    ex = _sim_client(sim.base_url, api_key=sim.api_key, secret=sim.api_secret, timeout_ms=1500)
    ex.load_markets()
    if faults:
        sim.set_faults(**faults)
    with pytest.raises(ccxt.BaseError) as info:
        call(ex)
    return map_ccxt_error(info.value)


@pytest.mark.parametrize(
    ("name", "setup", "call", "ours", "code"),
    [
        (
            "bad signature",
            None,
            lambda ex: (setattr(ex, "secret", "wrong"), ex.fetch_balance()),
            errors.AuthenticationError,
            "-1022",
        ),
        (
            "unknown key",
            None,
            lambda ex: (setattr(ex, "apiKey", "nobody"), ex.fetch_balance()),
            errors.AuthenticationError,
            "-2015",
        ),
        (
            "insufficient balance",
            None,
            lambda ex: ex.create_order("BTC/USDT", "market", "buy", 5),
            errors.InsufficientFundsError,
            "insufficient balance",
        ),
        (
            "lot size filter",
            None,
            # ccxt refuses this amount itself; the raw endpoint reaches the exchange's filter.
            lambda ex: ex.private_post_order(
                {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "quantity": "0.000001",
                    "price": "1000",
                }
            ),
            errors.InvalidOrderError,
            "-1013",
        ),
        (
            "unknown order",
            None,
            lambda ex: ex.fetch_order("424242", "BTC/USDT"),
            errors.OrderNotFoundError,
            "-2013",
        ),
        (
            "rate limited",
            {"rate_limit_next": 1},
            lambda ex: ex.fetch_balance(),
            errors.RateLimitedError,
            "-1003",
        ),
        (
            "5xx",
            {"fail_next": 1},
            lambda ex: ex.fetch_balance(),
            errors.RetryableExchangeError,
            None,
        ),
        (
            "timeout",
            {"timeout_next": 1, "hang_s": 3},
            lambda ex: ex.fetch_balance(),
            errors.RetryableExchangeError,
            None,
        ),
    ],
)
def test_every_simulator_error_code_maps_to_our_hierarchy(
    sim: ExchangeSimulator,
    name: str,
    setup: dict[str, Any] | None,
    call: Callable[[Any], Any],
    ours: type[errors.ExchangeError],
    code: str | None,
) -> None:
    mapped = _raw_error(sim, call, setup)
    assert type(mapped) is ours, name
    if code is not None:
        assert code in (mapped.exchange_message or "")


# ---------------------------------------------------------------- lost answers


@pytest.mark.parametrize("mode", ["503", "close"])
def test_order_accepted_then_answer_dropped_is_found_not_duplicated(
    sim: ExchangeSimulator, mode: str
) -> None:
    sim.set_faults(drop_next_orders=1, drop_mode=mode)

    async def scenario(c: CcxtExecutionClient) -> Any:
        return await c.create_order(order("buy", "market", "0.002", f"lost-{mode}"))

    placed = run(client(sim), scenario)
    assert isinstance(placed, ExchangeOrder)
    assert placed.status is OrderStatus.FILLED
    assert placed.client_order_id == f"lost-{mode}"
    assert len(sim_orders(sim, f"lost-{mode}")) == 1
    assert len(sim.orders()) == 1
    assert sim.stats["POST /api/v3/order"] == 1  # never sent again


@pytest.mark.parametrize(
    "faults",
    [
        {"fail_next": 1, "path_prefix": "/api/v3/order"},
        {"timeout_next": 1, "hang_s": 3, "path_prefix": "/api/v3/order"},
    ],
)
def test_order_lost_before_booking_is_proven_absent_then_resent_once(
    sim: ExchangeSimulator, faults: dict[str, Any]
) -> None:
    async def scenario(c: CcxtExecutionClient) -> Any:
        await c.load_markets()
        await c.fetch_ticker("BTC/USDT")
        sim.set_faults(**faults)
        return await c.create_order(order("buy", "market", "0.002", "resend-1"))

    placed = run(client(sim, timeout_ms=1000), scenario)
    assert isinstance(placed, ExchangeOrder)
    assert placed.status is OrderStatus.FILLED
    assert len(sim_orders(sim, "resend-1")) == 1
    assert sim.stats["POST /api/v3/order"] == 2  # the lost one, and one resend with the same id


def test_unreachable_lookup_raises_state_unknown_and_reconciles_later(
    sim: ExchangeSimulator,
) -> None:
    async def lost(c: CcxtExecutionClient) -> Any:
        await c.load_markets()
        await c.fetch_ticker("BTC/USDT")
        sim.set_faults(drop_next_orders=1)

        # Every request after the booked order fails: the lookup cannot be done.
        original = c.exchange.fetch_order

        async def failing(*args: Any, **kwargs: Any) -> Any:
            sim.set_faults(fail_next=1)
            return await original(*args, **kwargs)

        c.exchange.fetch_order = failing
        with pytest.raises(errors.OrderStateUnknownError) as info:
            await c.create_order(order("buy", "market", "0.002", "unknown-1"))
        c.exchange.fetch_order = original
        found = await c.fetch_order("BTC/USDT", client_order_id="unknown-1")
        return info.value, found

    err, found = run(client(sim), lost)
    assert err.client_order_id == "unknown-1"
    assert err.retryable
    assert isinstance(found, ExchangeOrder)  # a restarted bot reconciles by client order id
    assert found.status is OrderStatus.FILLED
    assert len(sim_orders(sim, "unknown-1")) == 1


# ---------------------------------------------------------------- circuit breaker


@pytest.mark.parametrize(
    "faults", [{"fail_next": 3}, {"timeout_next": 3, "hang_s": 2}], ids=["5xx", "timeouts"]
)
def test_circuit_opens_under_faults_fails_fast_and_closes_after_recovery(
    sim: ExchangeSimulator, faults: dict[str, Any]
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("sim:cb", failure_threshold=3, cooldown_s=10, clock=clock)
    c = client(sim, breaker=breaker, attempts=1, timeout_ms=500)

    async def scenario(c: CcxtExecutionClient) -> tuple[Any, ...]:
        await c.load_markets()
        sim.set_faults(**faults)
        for _ in range(3):
            with pytest.raises(errors.RetryableExchangeError) as info:
                await c.fetch_balances()
            assert not isinstance(info.value, errors.CircuitOpenError)
        opened = breaker.snapshot()
        served = sum(sim.stats.values())
        with pytest.raises(errors.CircuitOpenError):
            await c.fetch_balances()
        with pytest.raises(errors.CircuitOpenError):
            await c.create_order(order("buy", "market", "0.001", "cb-1"))
        untouched = sum(sim.stats.values()) == served
        clock.now += 11
        half = breaker.state
        balances = await c.fetch_balances()  # the probe: the faults are used up
        return opened, untouched, half, balances, breaker.snapshot()

    opened, untouched, half, balances, closed = run(c, scenario)
    assert opened["state"] == "open"
    assert opened["failures"] == 3
    assert opened["opened_at"] is not None
    assert untouched  # failing fast: nothing reached the exchange
    assert half is CircuitState.HALF_OPEN
    assert balances["USDT"].free == Decimal(10_000)
    assert (closed["state"], closed["failures"]) == ("closed", 0)
    assert sim_orders(sim, "cb-1") == []


# ---------------------------------------------------------------- accounts and paper


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    s = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", secret_key="k" * 40)
    db.upgrade(s)
    with db.session_scope(s) as session:
        session.add(User(id=1, email="u@example.com", password_hash="x"))
    yield s
    db.dispose_engines()


def test_test_connection_reports_permissions_and_bad_keys(
    sim: ExchangeSimulator, settings: Settings
) -> None:
    # The simulator is on loopback: accounts may point there once the operator allows it.
    host = sim.base_url.split("://", 1)[1].rstrip("/")
    settings = settings.model_copy(update={"allowed_api_hosts": [host]})
    with db.session_scope(settings) as s:
        good = accounts.store_credentials(
            s,
            settings,
            user_id=1,
            name="sim",
            exchange="binance",
            api_key=sim.api_key,
            api_secret=sim.api_secret,
            api_url=sim.base_url,
        )
        bad = accounts.store_credentials(
            s,
            settings,
            user_id=1,
            name="sim-bad",
            exchange="binance",
            api_key=sim.api_key,
            api_secret="wrong-secret-000",
            api_url=sim.base_url,
        )
    ok = asyncio.run(accounts.test_connection(settings, good))
    refused = asyncio.run(accounts.test_connection(settings, bad))
    assert (ok.ok, ok.can_read, ok.can_trade, ok.can_withdraw) == (True, True, True, False)
    assert (refused.ok, refused.error_code) == (False, "exchange_auth_failed")
    assert sim.orders() == []  # no order was placed to find out
    with db.session_scope(settings) as s:
        row = s.get(ExchangeAccount, good)
        assert row is not None
        assert row.permissions == {"read": True, "trade": True, "withdraw": False, "ok": True}


def test_paper_broker_fills_on_simulator_prices(sim: ExchangeSimulator, settings: Settings) -> None:
    with db.session_scope(settings) as s:
        account = ExchangeAccount(user_id=1, name="paper", exchange="binance", mode="paper")
        s.add(account)
        s.flush()
        account_id = account.id

    async def scenario() -> tuple[Any, ...]:
        public = CcxtExecutionClient.for_exchange(
            "binance", api_url=sim.base_url, enable_rate_limit=False
        )
        paper = PaperBroker(settings, account_id, public)
        try:
            await paper.fund({"USDT": 1000})
            ticker = await paper.fetch_ticker("BTC/USDT")
            placed = await paper.create_order(order("buy", "market", "0.001", "paper-1"))
            return ticker, placed, await paper.fetch_balances()
        finally:
            await paper.close()

    ticker, placed, balances = asyncio.run(scenario())
    assert isinstance(placed, ExchangeOrder)
    assert placed.average_price == ticker.ask
    assert balances["USDT"].free == Decimal(1000) - Decimal("0.001") * ticker.ask
    assert sim.orders() == []  # paper orders never reach the exchange
