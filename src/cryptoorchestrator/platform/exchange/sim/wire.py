"""Binance's spot wire formats: decimal strings, request parameters, kline rows, error answers.

Every answer the simulator sends is spelled here as Binance spells it (field names, decimals as
strings with 8 places, error codes and messages word for word, since ccxt matches some of them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from cryptoorchestrator.platform.exchange.sim.market import TRADES_PER_CANDLE, Bar, SymbolSpec

#: Binance's kline intervals.
INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
)
#: Binance's answer to a request over the rate limit (code -1003, HTTP 429).
MSG_RATE_LIMIT = (
    "Too many requests; current limit of IP(127.0.0.1) request weight is 6000 per minute. "
    "Please use the websocket for live updates to avoid bans."
)
#: The precision of Binance's decimal strings.
EIGHT_PLACES = Decimal("0.00000001")


class BinanceReject(Exception):  # noqa: N818  (Binance's word; never leaves the simulator)
    """A request the simulated exchange refuses, as Binance's ``code``, ``msg`` and HTTP status.

    Internal to the simulator: its HTTP layer turns it into Binance's error body, so it is not
    part of the platform's error hierarchy.
    """

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


def mandatory(name: str) -> BinanceReject:
    """Return Binance's -1102 rejection of a missing or empty parameter ``name``."""
    return BinanceReject(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def parse_decimal(
    params: Mapping[str, str], name: str, *, required: bool = False
) -> Decimal | None:
    """Return ``params[name]`` as a Decimal, or None; reject malformed numbers like Binance."""
    text = params.get(name)
    if text is None or text == "":
        if required:
            raise mandatory(name)
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BinanceReject(
            -1100,
            f"Illegal characters found in parameter '{name}'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        ) from None
    if not value.is_finite():
        raise mandatory(name)
    return value


def opt_int(params: Mapping[str, str], name: str) -> int | None:
    """Return ``params[name]`` as an int, None when absent or empty; reject other text (-1100)."""
    text = params.get(name)
    if text in (None, ""):
        return None
    try:
        return int(str(text))
    except ValueError:
        raise BinanceReject(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """Return an integer parameter such as ``limit``: ``default`` when absent, at most ``hi``."""
    value = opt_int(params, name)
    if value is None:
        return default
    # Binance clamps limits above the maximum and refuses those below 1.
    if value < lo:
        raise BinanceReject(-1100, f"Illegal characters found in parameter '{name}'.")
    return min(value, hi)


def fmt(value: Decimal | float | int) -> str:
    """Return ``value`` as Binance writes decimals: a string with 8 decimal places."""
    if isinstance(value, Decimal):
        return f"{value.quantize(EIGHT_PLACES, rounding=ROUND_HALF_UP):f}"
    return f"{float(value):.8f}"


def fmt_price(value: float, decimals: int) -> str:
    """Return a replayed float price rounded to the tick's ``decimals``, with 8 places."""
    return f"{round(value, decimals):.8f}"


def kline_row(bar: Bar, interval_ms: int, price_decimals: int) -> list[Any]:
    """Return one row of ``GET /api/v3/klines`` (the kline stream's events reuse it)."""
    quote = bar.volume * (bar.high + bar.low + bar.close) / 3
    pd = price_decimals
    return [
        bar.open_time,
        fmt_price(bar.open, pd),
        fmt_price(bar.high, pd),
        fmt_price(bar.low, pd),
        fmt_price(bar.close, pd),
        f"{bar.volume:.8f}",
        bar.open_time + interval_ms - 1,
        f"{quote:.8f}",
        TRADES_PER_CANDLE,
        f"{bar.volume / 2:.8f}",
        f"{quote / 2:.8f}",
        "0",
    ]


def kline_event(
    spec: SymbolSpec, interval: str, interval_ms: int, bar: Bar, now: int
) -> dict[str, Any]:
    """Return Binance's kline stream event of ``bar``, with the prices of its klines row."""
    row = kline_row(bar, interval_ms, spec.price_decimals)
    first_trade = bar.index * TRADES_PER_CANDLE
    kline = {
        "t": row[0],
        "T": row[6],
        "s": spec.market_id,
        "i": interval,
        "f": first_trade,
        "L": first_trade + row[8] - 1,
        "o": row[1],
        "c": row[4],
        "h": row[2],
        "l": row[3],
        "v": row[5],
        "n": row[8],
        "x": bar.closed,
        "q": row[7],
        "V": row[9],
        "Q": row[10],
        "B": row[11],
    }
    return {"e": "kline", "E": now, "s": spec.market_id, "k": kline}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Return ``data`` as a compact JSON answer."""
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(code: int, msg: str, status: int = 400) -> web.Response:
    """Return Binance's error body ``{"code": ..., "msg": ...}``."""
    return json_response({"code": code, "msg": msg}, status=status)


def symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    """Return a pair as GET /api/v3/exchangeInfo lists it: status, assets, filters."""
    return {
        "symbol": spec.market_id,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(spec.min_price),
                "maxPrice": fmt(spec.max_price),
                "tickSize": fmt(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(spec.min_qty),
                "maxQty": fmt(spec.max_qty),
                "stepSize": fmt(spec.step_size),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt(Decimal(0)),
                "maxQty": fmt(spec.max_qty),
                "stepSize": fmt(Decimal(0)),
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": fmt(Decimal(9_000_000)),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "NONE"],
    }
