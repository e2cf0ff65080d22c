"""Market data of ``/ws/market-data`` and ``/api/markets``: the feed, and symbol checks.

The feed is the platform's :class:`~cryptoorchestrator.platform.services.market_feed.
MarketFeedHub` (one poller per exchange, symbol and timeframe, fanned out to every subscriber),
over the operator's sources (:mod:`~cryptoorchestrator.platform.services.market_sources`): the
exchange through ccxt, or the market-data store.  :func:`unknown_symbol` and
:func:`resolve_symbol` turn a symbol without market data into the one 422 error naming the
valid ones.
"""

from __future__ import annotations

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model import normalize_symbol, symbol_from_path
from cryptoorchestrator.platform.services.market_feed import MarketFeedHub
from cryptoorchestrator.platform.services.market_sources import stored_exchanges, stored_symbols

#: How many valid symbols an "unknown symbol" answer lists at most (the rest: GET /api/markets).
MAX_LISTED = 50
#: The route listing each exchange's valid symbols (named in "unknown symbol" answers).
SYMBOLS_ROUTE = "GET /api/markets/symbols"
#: The market feed of an app (``create_app(feed=...)``, ``AppContext.feed``).
MarketFeed = MarketFeedHub


def unknown_symbol(
    text: str, valid: list[str], *, field: str = "symbol", listed_by: str = "GET /api/markets"
) -> InvalidInputError:
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
    listed_by
        The route that lists the valid symbols, named in the message.

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
        f"; valid symbols: {shown} ({listed_by} lists them; in a path write BTC-USDT, "
        "BTC_USDT or BTC%2FUSDT)"
        if valid
        else f"; no market data is available ({listed_by})"
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


__all__ = [
    "MAX_LISTED",
    "SYMBOLS_ROUTE",
    "MarketFeed",
    "resolve_symbol",
    "stored_exchanges",
    "stored_symbols",
    "unknown_symbol",
]
