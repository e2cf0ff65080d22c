"""Sources of live market data for ``/ws/market-data``.

A :class:`MarketFeed` answers "what is the latest candle of this symbol?"; a feed that also has
``symbols()`` lets ``/ws/market-data`` tell a client which symbols exist.  The default reads the
market-data store's newest stored candle (seeding the bundled dataset on first use); the exchange
simulator or a live ccxt poller can replace it later by implementing the same two methods and
passing the object to ``create_app(feed=...)``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol

from cryptoorchestrator.platform.data.store import BUNDLED, MANIFEST, OhlcvStore, seed_bundled
from cryptoorchestrator.platform.errors import CryptoOrchError, InvalidInputError
from cryptoorchestrator.platform.model import normalize_symbol, symbol_from_path

#: How many valid symbols an "unknown symbol" answer lists at most (the rest: GET /api/markets).
MAX_LISTED = 50


def stored_exchanges(store: OhlcvStore) -> list[str]:
    """Return the exchanges with candles in ``store`` or bundled with the package, sorted."""
    found = {ex for ex, _, _ in BUNDLED}
    if store.root.is_dir():
        found.update(m.parent.parent.parent.name for m in store.root.glob(f"*/*/*/{MANIFEST}"))
    return sorted(found)


def stored_symbols(store: OhlcvStore, exchange: str) -> list[str]:
    """Return the symbols of ``exchange`` with candles in ``store`` or bundled with the package.

    The same symbols ``GET /api/markets`` lists (it seeds the bundled ones), read from the
    folder names only, so checking a symbol costs no manifest read.

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


def unknown_symbol(text: str, valid: list[str], *, field: str = "symbol") -> InvalidInputError:
    """Return the 422 error for a symbol that is malformed or has no market data.

    The error lists the valid symbols and, for a spelling without a separator such as
    ``BTCUSDT``, suggests the valid symbol it matches.

    Parameters
    ----------
    text
        The symbol as the client sent it.
    valid
        The symbols that have market data (:func:`stored_symbols`).
    field
        The field to name in the error.

    Returns
    -------
    InvalidInputError
        The error to raise (or to send over a WebSocket).
    """
    squashed = "".join(ch for ch in text.upper() if ch.isalnum())
    matches = [v for v in valid if "".join(ch for ch in v if ch.isalnum()) == squashed]
    shown = ", ".join(valid[:MAX_LISTED]) + (" ..." if len(valid) > MAX_LISTED else "")
    message = f"unknown symbol {text[:45]!r}"
    if matches:
        message += f"; did you mean {matches[0]}?"
    message += (
        f"; valid symbols: {shown} (GET /api/markets lists them; in a path write BTC-USDT, "
        "BTC_USDT or BTC%2FUSDT)"
        if valid
        else "; no market data is stored (GET /api/markets)"
    )
    return InvalidInputError(field, message, allowed=valid[:MAX_LISTED])


def resolve_symbol(
    text: str, valid: list[str], *, field: str = "symbol", path: bool = False
) -> str:
    """Return ``text`` as a known ``BASE/QUOTE`` symbol, or raise a 422 listing the valid ones.

    Parameters
    ----------
    text
        The symbol as sent: ``BTC/USDT``, ``BTC-USDT``, ``BTC_USDT`` (any case).
    valid
        The symbols that have market data (:func:`stored_symbols`).
    field
        The field to name in the error.
    path
        Whether ``text`` is a URL path segment (``BTC-USDT_USDT`` is ``BTC/USDT:USDT`` there).

    Returns
    -------
    str
        The symbol, e.g. ``BTC/USDT``.

    Raises
    ------
    InvalidInputError
        Malformed or without market data (:func:`unknown_symbol`).
    """
    try:
        symbol = symbol_from_path(text) if path else normalize_symbol(text, field=field)
    except InvalidInputError:
        raise unknown_symbol(text, valid, field=field) from None
    if symbol not in valid:
        raise unknown_symbol(text, valid, field=field)
    return symbol


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

    def symbols(self) -> list[str]:
        """Return the symbols this feed has candles of (for "unknown symbol" answers)."""
        return stored_symbols(self.store, self.exchange)

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
