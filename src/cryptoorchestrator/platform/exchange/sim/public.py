"""Binance's public spot endpoints (market data) over the replayed markets.

Every answer shows the markets as they are at the simulated time: the candles that closed, the
forming one's partial prices, and a book and trades derived from the same price path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import numpy as np
from aiohttp import web

from cryptoorchestrator.platform.exchange.sim.market import (
    TRADES_PER_CANDLE,
    ReplayMarket,
    best_quotes,
)
from cryptoorchestrator.platform.exchange.sim.matching import MatchingEngine
from cryptoorchestrator.platform.exchange.sim.wire import (
    INTERVALS,
    BinanceReject,
    fmt,
    fmt_price,
    int_param,
    json_response,
    kline_row,
    opt_int,
    symbol_info,
)
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms


class PublicEndpoints:
    """The handlers of Binance's public REST endpoints (``/api/v3/klines``, ``/ticker``...).

    Parameters
    ----------
    engine
        The matching engine; its markets are the ones served.
    now
        Returns the simulated time, with resting orders matched up to it.
    """

    def __init__(self, engine: MatchingEngine, now: Callable[[], int]) -> None:
        self.engine = engine
        self.markets = engine.markets
        self._now = now

    def _market(self, params: Mapping[str, str]) -> ReplayMarket:
        return self.engine.market(params.get("symbol"))

    async def ping(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/ping``: an empty object."""
        return json_response({})

    async def time(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/time`` with the simulated time."""
        return json_response({"serverTime": self._now()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/exchangeInfo``: rate limits and the pairs' filters."""
        params = dict(request.query)
        wanted: set[str] | None = None
        if "symbol" in params:
            wanted = {params["symbol"]}
        elif "symbols" in params:
            try:
                wanted = set(json.loads(params["symbols"]))
            except ValueError:
                raise BinanceReject(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
        symbols = []
        for market_id, market in self.markets.items():
            if wanted is not None and market_id not in wanted:
                continue
            symbols.append(symbol_info(market.spec))
        if wanted is not None and not symbols:
            raise BinanceReject(-1121, "Invalid symbol.")
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": self._now(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "DAY",
                        "intervalNum": 1,
                        "limit": 200000,
                    },
                    {
                        "rateLimitType": "RAW_REQUESTS",
                        "interval": "MINUTE",
                        "intervalNum": 5,
                        "limit": 61000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            }
        )

    async def klines(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/klines`` (and ``uiKlines``) with the candles visible now."""
        params = dict(request.query)
        market = self._market(params)
        interval = params.get("interval", "")
        if not interval:
            raise BinanceReject(
                -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
            )
        if interval not in INTERVALS:
            raise BinanceReject(-1120, "Invalid interval.")
        interval_ms = timeframe_to_ms(interval)
        if interval_ms < market.tf_ms or interval_ms % market.tf_ms:
            # The simulator cannot invent finer candles than it stores.
            raise BinanceReject(-1120, "Invalid interval.")
        limit = int_param(params, "limit", 500, 1, 1000)
        start = opt_int(params, "startTime")
        end = opt_int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise BinanceReject(-1127, "More than 200 hours between startTime and endTime.")
        now = self._now()
        bars = market.klines(interval_ms, now, start=start, end=end, limit=limit)
        pd = market.spec.price_decimals
        rows = [kline_row(b, interval_ms, pd) for b in bars]
        return json_response(rows)

    def _ticker(self, market: ReplayMarket, now: int) -> dict[str, Any]:
        window = market.window(now - 86_400_000, now)
        pd = market.spec.price_decimals
        last = market.price(now)
        if not window or last is None:
            open_ = high = low = last_ = 0.0
            volume = 0.0
            open_time = now - 86_400_000
        else:
            open_, last_ = window[0].open, last
            high = max(b.high for b in window)
            low = min(b.low for b in window)
            volume = sum(b.volume for b in window)
            open_time = window[0].open_time
        prev_idx = (window[0].index - 1) if window else -1
        prev_close = float(market.c[prev_idx]) if prev_idx >= 0 else open_
        bid, ask = best_quotes(market, now)
        change = last_ - open_
        quote_volume = sum(b.volume * (b.high + b.low + b.close) / 3 for b in window)
        first_id = window[0].index * TRADES_PER_CANDLE if window else -1
        last_id = window[-1].index * TRADES_PER_CANDLE + TRADES_PER_CANDLE - 1 if window else -1
        return {
            "symbol": market.spec.market_id,
            "priceChange": fmt_price(change, pd),
            "priceChangePercent": f"{(change / open_ * 100) if open_ else 0.0:.3f}",
            "weightedAvgPrice": fmt_price(quote_volume / volume if volume else last_, pd),
            "prevClosePrice": fmt_price(prev_close, pd),
            "lastPrice": fmt_price(last_, pd),
            "lastQty": fmt(market.spec.step_size * 10),
            "bidPrice": fmt(bid),
            "bidQty": fmt(Decimal("0.5")),
            "askPrice": fmt(ask),
            "askQty": fmt(Decimal("0.5")),
            "openPrice": fmt_price(open_, pd),
            "highPrice": fmt_price(high, pd),
            "lowPrice": fmt_price(low, pd),
            "volume": f"{volume:.8f}",
            "quoteVolume": f"{quote_volume:.8f}",
            "openTime": open_time,
            "closeTime": now,
            "firstId": first_id,
            "lastId": last_id,
            "count": max(0, last_id - first_id + 1),
        }

    def _markets_for(self, params: Mapping[str, str]) -> list[ReplayMarket] | ReplayMarket:
        if "symbol" in params:
            return self._market(params)
        if "symbols" in params:
            try:
                ids = json.loads(params["symbols"])
            except ValueError:
                raise BinanceReject(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            return [self.engine.market(str(i)) for i in ids]
        return list(self.markets.values())

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/ticker/24hr`` for one pair, some, or all."""
        now = self._now()
        sel = self._markets_for(request.query)
        if isinstance(sel, ReplayMarket):
            return json_response(self._ticker(sel, now))
        return json_response([self._ticker(m, now) for m in sel])

    async def ticker_price(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/ticker/price`` for one pair, some, or all."""
        now = self._now()
        sel = self._markets_for(request.query)

        def one(m: ReplayMarket) -> dict[str, str]:
            return {
                "symbol": m.spec.market_id,
                "price": fmt_price(m.price(now) or 0.0, m.spec.price_decimals),
            }

        return json_response(one(sel) if isinstance(sel, ReplayMarket) else [one(m) for m in sel])

    async def book_ticker(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/ticker/bookTicker`` for one pair, some, or all."""
        now = self._now()
        sel = self._markets_for(request.query)

        def one(m: ReplayMarket) -> dict[str, str]:
            bid, ask = best_quotes(m, now)
            return {
                "symbol": m.spec.market_id,
                "bidPrice": fmt(bid),
                "bidQty": fmt(Decimal("0.5")),
                "askPrice": fmt(ask),
                "askQty": fmt(Decimal("0.5")),
            }

        return json_response(one(sel) if isinstance(sel, ReplayMarket) else [one(m) for m in sel])

    async def avg_price(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/avgPrice`` with the traded price now."""
        market = self._market(request.query)
        now = self._now()
        return json_response(
            {
                "mins": 5,
                "price": fmt_price(market.price(now) or 0.0, market.spec.price_decimals),
                "closeTime": now,
            }
        )

    async def depth(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/depth`` with a deterministic book around the traded price."""
        params = dict(request.query)
        market = self._market(params)
        limit = int_param(params, "limit", 100, 1, 5000)
        now = self._now()
        bid, ask = best_quotes(market, now)
        tick = market.spec.tick_size
        # Levels a few ticks apart with deterministic sizes that change as time passes.
        gap = tick * max(1, int((bid * Decimal("0.00001")) / tick))
        seed = now // 1000
        bids, asks = [], []
        for k in range(limit):
            size = Decimal((seed * 7919 + k * 104_729) % 100_000 + 1_000) / Decimal(100_000)
            size = (size / market.spec.step_size).to_integral_value() * market.spec.step_size
            if bid - gap * k > 0:
                bids.append([fmt(bid - gap * k), fmt(size)])
            asks.append([fmt(ask + gap * k), fmt(size)])
        return json_response({"lastUpdateId": now, "bids": bids, "asks": asks})

    def _recent_public_trades(
        self, market: ReplayMarket, params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        limit = int_param(params, "limit", 500, 1, 1000)
        now = self._now()
        from_id = opt_int(params, "fromId")
        start = opt_int(params, "startTime")
        end = opt_int(params, "endTime")
        visible = market.visible_count(now)
        per = TRADES_PER_CANDLE
        if from_id is not None:
            first = from_id // per
            trades = market.public_trades(
                now, first_candle=first, last_candle=first + limit // per + 2
            )
            trades = [t for t in trades if t["id"] >= from_id][:limit]
        elif start is not None:
            first = int(np.searchsorted(market.ts, start, "left")) - 1
            trades = market.public_trades(
                now, first_candle=first, last_candle=first + limit // per + 2
            )
            trades = [t for t in trades if t["time"] >= start and (end is None or t["time"] <= end)]
            trades = trades[:limit]
        else:
            trades = market.public_trades(
                now, first_candle=visible - limit // per - 2, last_candle=visible
            )[-limit:]
        return trades

    async def trades(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/trades`` (and ``historicalTrades``) with synthetic trades."""
        params = dict(request.query)
        market = self._market(params)
        pd = market.spec.price_decimals
        rows = [
            {
                "id": t["id"],
                "price": fmt_price(t["price"], pd),
                "qty": f"{t['qty']:.8f}",
                "quoteQty": f"{t['qty'] * t['price']:.8f}",
                "time": t["time"],
                "isBuyerMaker": t["isBuyerMaker"],
                "isBestMatch": True,
            }
            for t in self._recent_public_trades(market, params)
        ]
        return json_response(rows)

    async def agg_trades(self, request: web.Request) -> web.Response:
        """Answer ``GET /api/v3/aggTrades`` with the same synthetic trades, aggregated form."""
        params = dict(request.query)
        market = self._market(params)
        pd = market.spec.price_decimals
        rows = [
            {
                "a": t["id"],
                "p": fmt_price(t["price"], pd),
                "q": f"{t['qty']:.8f}",
                "f": t["id"],
                "l": t["id"],
                "T": t["time"],
                "m": t["isBuyerMaker"],
                "M": True,
            }
            for t in self._recent_public_trades(market, params)
        ]
        return json_response(rows)
