"""Where the head node's market feed reads: the exchange through ccxt, or the market-data store.

:func:`market_sources` decides per exchange from the operator's settings
(``CRYPTOORCH_MARKET_FEED`` and ``CRYPTOORCH_EXCHANGE_ENDPOINTS``):

* ``exchange``: every exchange is polled through ccxt, at its configured endpoint if there is one
  (the demo's simulator, a testnet), else at the exchange's public API;
* ``store``: every exchange's newest stored candles (they change when the store is synced);
* ``auto`` (default): the exchanges with a configured endpoint are polled, the others read from
  the store.  ``cryptoorch serve --demo`` configures the simulator as ``binance``'s endpoint, so
  the dashboard shows the candles the demo bot trades on.

Only the operator's sources are read: a client of ``/ws/market-data`` chooses among these
exchanges, never a URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptoorchestrator.platform.data.store import BUNDLED, MANIFEST, OhlcvStore, seed_bundled
from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError
from cryptoorchestrator.platform.exchange.circuit import CircuitBreaker
from cryptoorchestrator.platform.exchange.execution import Candle, Ticker
from cryptoorchestrator.platform.model.symbols import normalize_symbol, symbol_from_path
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms
from cryptoorchestrator.platform.services.market_feed import MarketDataSource, MarketFeedHub
from cryptoorchestrator.platform.settings import Settings

if TYPE_CHECKING:
    from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient

#: The account id the feed's public ccxt clients are keyed under (their circuit breaker).
FEED_ACCOUNT = "market-feed"


def stored_exchanges(store: OhlcvStore) -> list[str]:
    """Return the exchanges with candles in ``store`` or bundled with the package, sorted."""
    found = {ex for ex, _, _ in BUNDLED}
    if store.root.is_dir():
        found.update(m.parent.parent.parent.name for m in store.root.glob(f"*/*/*/{MANIFEST}"))
    return sorted(found)


def stored_symbols(store: OhlcvStore, exchange: str) -> list[str]:
    """Return the symbols of ``exchange`` with candles in ``store`` or bundled with the package.

    Read from the folder names only, so checking a symbol costs no manifest read.

    Parameters
    ----------
    store
        The market-data store.
    exchange
        The exchange's name, e.g. ``binance``.

    Returns
    -------
    list[str]
        Sorted ``BASE/QUOTE`` symbols.
    """
    found = {symbol for ex, symbol, _ in BUNDLED if ex == exchange}
    if store.root.is_dir():
        # The exchange is matched against folder names, never put into the glob pattern.
        for manifest in store.root.glob(f"*/*/*/{MANIFEST}"):
            if manifest.parent.parent.parent.name != exchange:
                continue
            try:
                found.add(symbol_from_path(manifest.parent.parent.name))
            except InvalidInputError:
                continue  # a foreign folder inside data_dir is not a market
    return sorted(found)


class StoreMarketSource:
    """An exchange's newest stored candles (bundled ones are seeded on first use).

    Every stored candle is closed (``live`` is False), and the store has no quote: the hub sends
    the last close as the ticker.  A poll reads the dataset's manifest; the candles are read
    again only when its last candle changed (after a sync).
    """

    live = False

    def __init__(self, store: OhlcvStore, exchange: str) -> None:
        self.store = store
        self.exchange = exchange
        self._cache: dict[tuple[str, str], tuple[int, list[Candle]]] = {}

    async def symbols(self) -> list[str]:
        """Return the symbols with stored or bundled candles."""
        return await asyncio.to_thread(stored_symbols, self.store, self.exchange)

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        """Return the newest ``limit`` stored candles, oldest first.

        Raises
        ------
        NotFoundError
            If nothing is stored (or bundled) for the market.
        """
        return await asyncio.to_thread(self._read, normalize_symbol(symbol), timeframe, limit)

    def _read(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        store, exchange = self.store, self.exchange
        if not store.exists(exchange, symbol, timeframe):
            seed_bundled(store, exchange, symbol, timeframe)
        info = store.info(exchange, symbol, timeframe)
        if info is None or info.last is None:
            raise NotFoundError(f"no stored candles for {exchange} {symbol} {timeframe}")
        hit = self._cache.get((symbol, timeframe))
        if hit is not None and hit[0] == info.last and len(hit[1]) >= min(limit, info.rows):
            return hit[1][-limit:]
        start = info.last - (limit - 1) * timeframe_to_ms(timeframe)
        table = store.read(exchange, symbol, timeframe, start=start)
        rows = table.to_pylist()[-limit:]
        candles = [
            Candle(int(r["timestamp"]), r["open"], r["high"], r["low"], r["close"], r["volume"])
            for r in rows
        ]
        self._cache[(symbol, timeframe)] = (info.last, candles)
        return candles

    async def fetch_ticker(self, symbol: str) -> Ticker | None:
        """Return None: the store holds candles only."""
        return None

    async def close(self) -> None:
        """Nothing to release."""


class CcxtMarketSource:
    """An exchange's public market data through ccxt (the client bots' market data uses too).

    The client is built on first use, inside the running event loop that then owns its HTTP
    session.  It does not retry by itself: the hub's poller reports a failure to its
    subscribers at once and backs off.

    Parameters
    ----------
    exchange
        ccxt's exchange id.
    api_url
        The operator's endpoint for it (the simulator, a testnet); None: ccxt's own URLs.
    build
        Builds the client instead of the platform's factory (tests).
    """

    live = True

    def __init__(
        self,
        exchange: str,
        api_url: str | None = None,
        *,
        build: Callable[[], Any] | None = None,
    ) -> None:
        self.exchange = exchange
        self.api_url = api_url
        self._build = build
        self._client: Any | None = None

    def _get(self) -> Any:
        if self._client is None:
            if self._build is not None:
                self._client = self._build()
            else:
                self._client = _public_client(self.exchange, self.api_url)
        return self._client

    async def symbols(self) -> list[str]:
        """Return the exchange's active markets (loaded once, then cached by the client)."""
        markets = await self._get().load_markets()
        return sorted(s for s, m in markets.items() if getattr(m, "active", True) is not False)

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        """Return the newest ``limit`` candles (the newest one may be forming)."""
        candles: list[Candle] = await self._get().fetch_ohlcv(symbol, timeframe, None, limit)
        return candles

    async def fetch_ticker(self, symbol: str) -> Ticker | None:
        """Return the exchange's latest quote."""
        ticker: Ticker = await self._get().fetch_ticker(symbol)
        return ticker

    async def close(self) -> None:
        """Close the client's HTTP session (if one was opened)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _public_client(exchange: str, api_url: str | None) -> CcxtExecutionClient:
    from cryptoorchestrator.platform.exchange.ccxt_client import (
        CcxtExecutionClient,
        RetryPolicy,
    )

    # The poller backs off by itself and tells its subscribers at once: no retries, and a
    # breaker of its own that never opens (nor shows on the health route, which is about
    # trading accounts).
    breaker = CircuitBreaker(f"{exchange}:{FEED_ACCOUNT}", is_failure=lambda _exc: False)
    return CcxtExecutionClient.for_exchange(
        exchange,
        api_url=api_url,
        account_id=FEED_ACCOUNT,
        retry=RetryPolicy(attempts=1),
        breaker=breaker,
    )


def feed_exchanges(settings: Settings, default_exchange: str) -> list[str]:
    """Return the exchanges ``/ws/market-data`` serves: configured, stored, and the default."""
    store = OhlcvStore(settings.data_dir)
    return sorted({default_exchange, *settings.exchange_endpoints, *stored_exchanges(store)})


def is_live(settings: Settings, exchange: str) -> bool:
    """Return whether ``exchange`` is polled through ccxt (else read from the store)."""
    mode = settings.market_feed
    return mode == "exchange" or (mode == "auto" and exchange in settings.exchange_endpoints)


def market_sources(settings: Settings) -> Callable[[str], MarketDataSource]:
    """Return the builder of each exchange's source under the operator's settings."""
    store = OhlcvStore(settings.data_dir)

    def build(exchange: str) -> MarketDataSource:
        if is_live(settings, exchange):
            return CcxtMarketSource(exchange, settings.exchange_endpoints.get(exchange))
        return StoreMarketSource(store, exchange)

    return build


def market_hub(settings: Settings, *, default_exchange: str, poll_s: float) -> MarketFeedHub:
    """Return the head node's hub over the operator's sources (nothing runs before use).

    Parameters
    ----------
    settings
        Platform settings (``market_feed``, ``exchange_endpoints``, ``data_dir``).
    default_exchange
        The exchange subscribers get when they name none (always served).
    poll_s
        Seconds between polls of a market.
    """
    return MarketFeedHub(
        market_sources(settings), feed_exchanges(settings, default_exchange), poll_s=poll_s
    )


__all__ = [
    "FEED_ACCOUNT",
    "CcxtMarketSource",
    "StoreMarketSource",
    "feed_exchanges",
    "is_live",
    "market_hub",
    "market_sources",
    "stored_exchanges",
    "stored_symbols",
]
