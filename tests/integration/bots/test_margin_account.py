"""The paper margin account that shorting bots trade: signed balances under the margin rule.

A spot paper account sells only what it holds; a margin account (``max_gross_leverage``) may
sell what it does not hold, within the backtest's gross-exposure cap
(``margin.within_gross_cap``: exposure after the fill at most ``L`` x equity after its fee),
and buys back a short without any funds check.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from cryptoorchestrator.platform.exchange.execution import (
    Candle,
    ExchangeOrder,
    MarketInfo,
    OrderRejected,
    OrderRequest,
    Ticker,
)
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.model import OrderSide, OrderType
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount

BTC = MarketInfo(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.00001"),
    price_tick=Decimal("0.01"),
    min_amount=Decimal("0.00001"),
    min_notional=Decimal("5"),
)


class Quote:
    """A market-data source with one price (bid = ask = last) the test sets."""

    def __init__(self, price: str) -> None:
        self.price = Decimal(price)

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        return {"BTC/USDT": BTC}

    async def fetch_ticker(self, symbol: str) -> Ticker:
        return Ticker("BTC/USDT", last=self.price, bid=self.price, ask=self.price)

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        return []

    async def close(self) -> None:
        return None


def _accounts(bot_db: tuple[Any, int], n: int) -> list[int]:
    settings, bot_id = bot_db
    with db.session_scope(settings) as session:
        user_id = session.get(Bot, bot_id).user_id  # type: ignore[union-attr]
        rows = [
            ExchangeAccount(user_id=user_id, name=f"paper {i}", exchange="binance", mode="paper")
            for i in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [int(r.id) for r in rows]


def _order(side: str, amount: str, cid: str) -> OrderRequest:
    return OrderRequest("BTC/USDT", OrderSide(side), OrderType.MARKET, Decimal(amount), cid)


def test_a_margin_account_shorts_within_the_cap(bot_db: tuple[Any, int]) -> None:
    settings, _ = bot_db
    margin_id, spot_id = _accounts(bot_db, 2)
    quote = Quote("100")
    kw: dict[str, Any] = {"fee_rate": Decimal("0.001"), "fees_in_quote": True}
    margin = PaperBroker(settings, margin_id, quote, max_gross_leverage=1, **kw)
    spot = PaperBroker(settings, spot_id, quote, **kw)
    assert (margin.supports_short, spot.supports_short) == (True, False)

    async def scenario() -> list[Any]:
        await margin.fund({"USDT": Decimal(10_000)})
        await spot.fund({"USDT": Decimal(10_000)})
        out: list[Any] = [await spot.create_order(_order("sell", "1", "spot-short"))]
        # equity after the fee 10 000 - 9.99 = 9 990.01 holds a short of 9 990
        out.append(await margin.create_order(_order("sell", "99.9", "short")))
        out.append(await margin.fetch_balances())
        # 0.1 more: exposure 10 000 above equity 9 990.00 after its fee
        out.append(await margin.create_order(_order("sell", "0.1", "more")))
        quote.price = Decimal(110)
        out.append(await margin.create_order(_order("buy", "99.9", "cover")))
        out.append(await margin.fetch_balances())
        return out

    refused, short, held, more, cover, after = asyncio.run(scenario())
    assert isinstance(refused, OrderRejected)
    assert refused.code == "insufficient_funds"
    assert isinstance(short, ExchangeOrder)
    assert short.filled == Decimal("99.9")
    assert held["BTC"].total == Decimal("-99.9")
    assert held["USDT"].total == Decimal(10_000) + Decimal(9_990) - Decimal("9.99")
    assert isinstance(more, OrderRejected)
    assert more.code == "insufficient_margin"
    assert isinstance(cover, ExchangeOrder)
    assert cover.filled == Decimal("99.9")
    assert "BTC" not in after or after["BTC"].total == 0
    # sold at 100, bought back at 110, fees 9.99 and 10.989
    assert after["USDT"].total == Decimal(10_000) - Decimal(999) - Decimal("9.99") - Decimal(
        "10.989"
    )
