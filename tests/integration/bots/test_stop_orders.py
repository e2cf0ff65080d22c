"""The exchange holds a bot's stop: the runtime's stop-loss order lifecycle on the simulator.

A bot trading through ccxt's binance class on the exchange simulator places a ``STOP_LOSS``
order once its entry fills, at the kernel's level floored onto the tick; replaces it (cancel,
then place) when a closed candle moves the trailing level; cancels it before a signal exit; and
after a restart adopts the order it left on the exchange instead of placing a second one.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
from sqlalchemy import select

from cryptoorchestrator.platform.bots.runtime import BotRuntime, BotSettings
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Order

HOUR = 3_600_000


class Scripted:
    """Signals from a script: buy on the n-th decision, sell on the m-th (0: never)."""

    def __init__(self, buy_at: int, sell_at: int) -> None:
        self.calls = 0
        self.buy_at, self.sell_at = buy_at, sell_at

    def __call__(self, bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        self.calls += 1
        return self.calls == self.buy_at, self.calls == self.sell_at, False, False


def _runtime(settings: Any, bot_id: int, sim: Any, signals: Scripted, name: str) -> BotRuntime:
    client = CcxtExecutionClient.for_exchange(
        "binance",
        api_key=sim.api_key,
        secret=sim.api_secret,
        api_url=sim.base_url,
        account_id=f"stops-{bot_id}-{name}",
        enable_rate_limit=False,
    )
    manager = RiskManager(RiskLimits(max_orders_per_minute=1000), TestClock())
    manager.register_bot(
        bot_id, equity=Decimal(10_000), max_position_pct=Decimal(50), risk_per_trade_pct=Decimal(1)
    )

    async def gate(check: OrderCheck) -> RiskDecision:
        return manager.approve(check)

    cfg = BotSettings(
        bot_id=bot_id,
        symbol="BTC/USDT",
        timeframe="1h",
        exchange="binance",
        starting_balance=Decimal(10_000),
        max_position_pct=Decimal(50),
        risk_per_trade_pct=Decimal(1),
        stop_loss_pct=Decimal(3),
        trailing_stop_pct=Decimal(2),
        window=100,
    )
    return BotRuntime(cfg, settings, client, signals, gate, poll_interval_s=0.01, settle_s=0.0)


def _stop_orders(sim: Any) -> list[dict[str, Any]]:
    """The simulator's stop-loss orders, oldest first."""
    stops = [o for o in sim.orders() if o["type"] == "STOP_LOSS"]
    return sorted(stops, key=lambda o: int(o["orderId"]))


async def _expected_stop(rt: BotRuntime) -> Decimal:
    """The kernel's level for the position now, floored onto the exchange's tick."""
    stops = rt.position_stops()
    assert stops is not None
    _, level = stops.stop_level()
    tick = (await rt.client.market("BTC/USDT")).price_tick
    assert tick is not None
    return (Decimal(repr(level)) / tick).to_integral_value(rounding=ROUND_FLOOR) * tick


def test_the_stop_order_follows_the_position(bot_db: Any, sim: Any) -> None:
    """Placed with the entry, replaced as the trailing level rises, cancelled by the signal exit
    (or filled at its stop or a gapping open): the exchange never holds two."""
    settings, bot_id = bot_db
    rt = _runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=12), "life")
    seen: list[tuple[int, Decimal]] = []

    async def scenario() -> None:
        await rt.prepare()
        assert await rt.poll_once()  # buys; the stop goes on the exchange with the fill
        for _ in range(12):
            resting = [o for o in _stop_orders(sim) if o["status"] == "NEW"]
            if rt.position_stops() is not None:  # in the position (dust left by fees aside)
                assert len(resting) == 1, resting
                assert Decimal(resting[0]["stopPrice"]) == await _expected_stop(rt)
                seen.append((resting[0]["orderId"], Decimal(resting[0]["stopPrice"])))
            else:
                assert resting == []
                break
            sim.advance(HOUR)
            assert await rt.poll_once()
        await rt.close()

    asyncio.run(scenario())
    orders = _stop_orders(sim)
    assert len({oid for oid, _ in seen}) >= 2, "the trailing level must have moved the stop"
    assert all(o["status"] == "CANCELED" for o in orders[:-1]), orders
    assert [s for _, s in seen] == sorted(s for _, s in seen)  # a long's stop only rises
    last = orders[-1]
    sells = sorted(
        (o for o in sim.orders() if o["side"] == "SELL" and o["type"] == "MARKET"),
        key=lambda o: int(o["orderId"]),
    )
    if last["status"] == "FILLED":  # the stop sold the position: no signal exit after it
        assert sells == []
    else:  # the signal exit cancelled the stop first, then sold at market
        assert last["status"] == "CANCELED"
        assert [o["clientOrderId"].rsplit("-", 1)[1] for o in sells] == ["X"]
        assert sells[0]["orderId"] > last["orderId"]
    with db.session_scope(settings) as session:
        rows = session.scalars(
            select(Order).where(Order.bot_id == bot_id, Order.type == "stop_loss")
        ).all()
        books = {r.client_order_id: r.status for r in rows}
    status = {"CANCELED": "canceled", "FILLED": "filled", "NEW": "open"}
    assert books == {o["clientOrderId"]: status[o["status"]] for o in orders}


def test_a_restarted_bot_adopts_its_stop_order(bot_db: Any, sim: Any) -> None:
    """The order left on the exchange is the restarted bot's: kept or replaced, never doubled."""
    settings, bot_id = bot_db

    async def scenario() -> Decimal:
        first = _runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=0), "first")
        await first.prepare()
        assert await first.poll_once()
        await first.close()
        assert len(_stop_orders(sim)) == 1
        again = _runtime(settings, bot_id, sim, Scripted(buy_at=0, sell_at=0), "again")
        await again.prepare()
        sim.advance(HOUR)
        assert await again.poll_once()
        in_position = again.position_stops() is not None
        expected = await _expected_stop(again) if in_position else Decimal(0)
        await again.close()
        return expected

    expected = asyncio.run(scenario())
    orders = _stop_orders(sim)
    if expected:  # still in the position: exactly one stop rests, at the level
        resting = [o for o in orders if o["status"] == "NEW"]
        assert len(resting) == 1
        assert Decimal(resting[0]["stopPrice"]) == expected
    assert all(o["status"] in ("NEW", "CANCELED", "FILLED") for o in orders)
    with db.session_scope(settings) as session:
        statuses = session.scalars(
            select(Order.status).where(Order.bot_id == bot_id, Order.type == "stop_loss")
        ).all()
    assert "rejected" not in statuses
    assert len(statuses) == len(orders)
