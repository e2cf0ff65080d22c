"""A finding of the chaos runs, reproduced without Ray: a decision lost after a quick restart.

A bot dies after marking an order ``submitted`` and before the request leaves (the live
client's path: the mark is written first).  Restarted within ``settle_s`` (the exchange's
receive window, 11 s; a Ray restart takes 4-5 s), the bot cannot yet conclude that the
exchange never got the order, so its decision on the same candle finds the order
``submitted`` and does not send it; it completes the candle.  Once ``settle_s`` has passed,
reconciliation notes the order for a resend "by the next decision on that candle", which never
comes, and clears its "unconfirmed" flag: the order stays ``submitted`` with nothing at the
exchange, through later candles, until the bot restarts (whose reconciliation cancels it as
stale).  No duplicate and no lost fill, but the candle's trade is lost and an open order is
left on the books meanwhile.

``tests/integration/bots/test_runtime.py`` covers the same crash with ``settle_s=0``, which
hides it.  Fixed: the decision made again on the candle waits out the receive window and asks
the exchange (``BotRuntime._settled``), so the order is sent once, for its candle.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from cryptoorchestrator.platform.bots.runtime import BotRuntime, BotSettings
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Order

HOUR = 3_600_000


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


def _runtime(settings: Settings, bot_id: int, sim: Any) -> BotRuntime:
    client = CcxtExecutionClient.for_exchange(
        "binance",
        api_key=sim.api_key,
        secret=sim.api_secret,
        api_url=sim.base_url,
        account_id=f"settle-{bot_id}",
        enable_rate_limit=False,
    )
    manager = RiskManager(RiskLimits(max_orders_per_minute=1000), TestClock())
    manager.register_bot(
        bot_id, equity=Decimal(10_000), max_position_pct=Decimal(50), risk_per_trade_pct=Decimal(1)
    )

    async def gate(check: OrderCheck) -> RiskDecision:
        return manager.approve(check)

    def buy_always(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        return True, False, False, False

    cfg = BotSettings(
        bot_id=bot_id,
        symbol="BTC/USDT",
        timeframe="1h",
        exchange="binance",
        starting_balance=Decimal(10_000),
        max_position_pct=Decimal(50),
        risk_per_trade_pct=Decimal(1),
        window=100,
    )
    # The production settle_s (the exchange's receive window), not 0.
    return BotRuntime(cfg, settings, client, buy_always, gate, poll_interval_s=0.01)


def test_an_unsent_order_is_sent_after_a_restart_within_settle_s(
    bot_db: tuple[Settings, int], sim: Any
) -> None:
    settings, bot_id = bot_db

    async def first_life() -> None:
        rt = _runtime(settings, bot_id, sim)
        await rt.prepare()

        async def dies_before_sending(request: Any) -> Any:
            raise Crash

        rt.client.create_order = dies_before_sending  # type: ignore[method-assign]
        sim.advance(HOUR)
        try:
            with pytest.raises(Crash):
                await rt.poll_once()
        finally:
            await rt.client.close()

    async def second_life() -> tuple[str, str]:
        rt = _runtime(settings, bot_id, sim)
        try:
            await rt.prepare()  # restarted at once: within settle_s of the mark
            await rt.poll_once()  # the same candle, decided again
            # The receive window passes; the bot keeps polling (no new candle).
            rt.settle_s = 0.0
            for _ in range(3):
                await rt.poll_once()
            # The next candle: the order is neither sent nor lapsed (nothing reconciles it).
            sim.advance(HOUR)
            await rt.poll_once()
            with db.session_scope(settings) as session:
                first = session.scalars(
                    select(Order).where(Order.bot_id == bot_id).order_by(Order.id)
                ).first()
                assert first is not None
                return first.client_order_id, first.status
        finally:
            await rt.client.close()

    asyncio.run(first_life())
    cid, status = asyncio.run(second_life())
    sent = [o for o in sim.orders() if o["clientOrderId"] == cid]
    assert (status, len(sent)) == ("filled", 1)
