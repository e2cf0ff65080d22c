"""``/api/markets``: stored datasets, their candles, and the symbols of each exchange (no auth).

``GET /api/markets`` lists the stored datasets; ``GET /api/markets/symbols`` lists, per exchange,
the symbols ``/ws/market-data`` streams and where it reads them (the exchange, or the store).
A symbol in a path may be written ``BTC-USDT``, ``BTC_USDT`` or ``BTC%2FUSDT``; one without
market data (or malformed, e.g. ``BTCUSDT``) answers 422 listing the valid symbols, which
``GET /api/markets`` lists too.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from cryptoorchestrator.api.context import AppContext
from cryptoorchestrator.api.deps import ContextDep
from cryptoorchestrator.api.feeds import resolve_symbol, stored_exchanges, stored_symbols
from cryptoorchestrator.api.schemas import CandlePublic, MarketPublic, OhlcvPublic, Text
from cryptoorchestrator.platform.data.store import BUNDLED, OhlcvStore, seed_bundled
from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError, UnavailableError
from cryptoorchestrator.platform.model import TIMEFRAMES, timeframe_to_ms

router = APIRouter(prefix="/api/markets", tags=["markets"])
#: The last millisecond of year 9999: later times overflow datetimes and 64-bit arithmetic.
MAX_MS = 253_402_300_799_999


def _store(context: AppContext) -> OhlcvStore:
    return OhlcvStore(context.settings.data_dir)


@router.get("")
def list_markets(
    context: ContextDep,
    exchange: Annotated[Text | None, Query(max_length=40)] = None,
) -> list[MarketPublic]:
    """List stored datasets (exchange, symbol, timeframe, span); bundled ones are included."""
    store = _store(context)
    for ex, sym, tf in BUNDLED:
        if not store.exists(ex, sym, tf):
            seed_bundled(store, ex, sym, tf)
    return [
        MarketPublic(
            exchange=d.exchange,
            symbol=d.symbol,
            timeframe=d.timeframe,
            rows=d.rows,
            first=d.first,
            last=d.last,
            gaps=d.gaps,
        )
        for d in store.list_datasets()
        if exchange is None or d.exchange == exchange
    ]


class ExchangeSymbolsPublic(BaseModel):
    """The symbols ``/ws/market-data`` streams for one exchange.

    ``source`` is ``exchange`` when the head node polls the exchange (through ccxt, at the
    operator's endpoint), ``store`` when it sends the newest stored candles.  ``error`` says
    why ``symbols`` is empty when the exchange cannot list them now.
    """

    exchange: str
    source: Literal["exchange", "store"]
    timeframe: str
    symbols: list[str]
    error: str | None = None


@router.get("/symbols")
async def list_symbols(
    context: ContextDep,
    exchange: Annotated[Text | None, Query(max_length=40)] = None,
) -> list[ExchangeSymbolsPublic]:
    """List, per exchange, the symbols ``/ws/market-data`` accepts and where it reads them.

    ``timeframe`` is the one a subscription gets when it names none.
    """
    feed = context.feed
    if exchange is not None and exchange not in feed.exchanges:
        raise InvalidInputError("exchange", "unknown exchange", allowed=feed.exchanges)
    names = [exchange] if exchange is not None else feed.exchanges

    async def one(name: str) -> ExchangeSymbolsPublic:
        error = None
        try:
            symbols = await feed.symbols(name)
        except UnavailableError as exc:
            symbols, error = [], str(exc)
        return ExchangeSymbolsPublic(
            exchange=name,
            source="exchange" if feed.source(name).live else "store",
            timeframe=context.options.market_timeframe,
            symbols=symbols,
            error=error,
        )

    # Side by side: one exchange that is slow to answer does not add to the others' wait.
    return list(await asyncio.gather(*(one(name) for name in names)))


@router.get(
    # ``:path``: Starlette decodes ``BTC%2FUSDT`` to ``BTC/USDT`` before routing, which a plain
    # parameter (one segment) would not match.
    "/{symbol:path}/ohlcv",
    responses={422: {"description": "unknown symbol: the details list the valid ones"}},
)
def ohlcv(
    context: ContextDep,
    symbol: Annotated[
        Text,
        Path(
            max_length=45,
            description="BTC-USDT, BTC_USDT or BTC%2FUSDT; GET /api/markets lists the symbols",
        ),
    ],
    timeframe: Annotated[Text, Query(max_length=4)] = "1h",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    since: Annotated[
        int | None,
        Query(ge=0, le=MAX_MS, description="ms since epoch, inclusive (up to year 9999)"),
    ] = None,
    exchange: Annotated[Text, Query(max_length=40)] = "binance",
) -> OhlcvPublic:
    """Return up to ``limit`` candles: from ``since`` forward, or the latest ones.

    An unknown symbol answers 422 with the valid symbols of ``exchange``.
    """
    if timeframe not in TIMEFRAMES:
        raise InvalidInputError("timeframe", "unknown timeframe", allowed=TIMEFRAMES)
    store = _store(context)
    valid = stored_symbols(store, exchange)
    if not valid:
        raise InvalidInputError(
            "exchange", "no market data stored for this exchange", allowed=stored_exchanges(store)
        )
    pair = resolve_symbol(symbol, valid, path=True)
    try:
        if not store.exists(exchange, pair, timeframe):
            seed_bundled(store, exchange, pair, timeframe)
        if since is not None:
            end = since + limit * timeframe_to_ms(timeframe)
            table = store.read(exchange, pair, timeframe, start=since, end=end)
        else:
            info = store.info(exchange, pair, timeframe)
            if info is None or info.last is None:
                raise NotFoundError(f"no stored data for {exchange} {pair} {timeframe}")
            start = info.last - (limit - 1) * timeframe_to_ms(timeframe)
            table = store.read(exchange, pair, timeframe, start=start)
    except InvalidInputError as exc:
        if exc.field == "exchange":
            raise InvalidInputError("exchange", exc.reason, allowed=exc.allowed) from exc
        raise
    table = table.slice(max(0, table.num_rows - limit)) if since is None else table.slice(0, limit)
    candles = [CandlePublic(**row) for row in table.to_pylist()]
    return OhlcvPublic(exchange=exchange, symbol=pair, timeframe=timeframe, candles=candles)
