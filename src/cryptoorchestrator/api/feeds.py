"""Sources of live market data for ``/ws/market-data``.

A :class:`MarketFeed` answers "what is the latest candle of this symbol?".  The default reads the
market-data store's newest stored candle (seeding the bundled dataset on first use); the exchange
simulator or a live ccxt poller can replace it later by implementing the same two methods and
passing the object to ``create_app(feed=...)``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol

from cryptoorchestrator.platform.data.store import OhlcvStore, seed_bundled
from cryptoorchestrator.platform.errors import CryptoOrchError
from cryptoorchestrator.platform.model import normalize_symbol


class MarketFeed(Protocol):
    """Latest candles per symbol.  Methods may block briefly; callers use a thread."""

    exchange: str
    timeframe: str

    def latest(self, symbol: str) -> dict[str, Any] | None:
        """Return the newest candle of ``symbol`` (ms timestamp, OHLCV floats) or None."""
        ...


class StoreFeed:
    """The newest candle of each symbol in the Parquet store, cached for ``ttl_s`` seconds."""

    def __init__(
        self, data_dir: Path, exchange: str = "binance", timeframe: str = "1h", ttl_s: float = 0.5
    ) -> None:
        self.store = OhlcvStore(data_dir)
        self.exchange = exchange
        self.timeframe = timeframe
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def latest(self, symbol: str) -> dict[str, Any] | None:
        """Return the newest stored candle of ``symbol``, or None if none is stored."""
        symbol = normalize_symbol(symbol)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(symbol)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        candle = self._read(symbol)
        with self._lock:
            self._cache[symbol] = (now, candle)
        return candle

    def _read(self, symbol: str) -> dict[str, Any] | None:
        try:
            if not self.store.exists(self.exchange, symbol, self.timeframe):
                seed_bundled(self.store, self.exchange, symbol, self.timeframe)
            info = self.store.info(self.exchange, symbol, self.timeframe)
            if info is None or info.last is None:
                return None
            table = self.store.read(self.exchange, symbol, self.timeframe, start=info.last)
        except CryptoOrchError:
            return None
        if table.num_rows == 0:
            return None
        row = {name: table.column(name)[table.num_rows - 1].as_py() for name in table.column_names}
        return row
