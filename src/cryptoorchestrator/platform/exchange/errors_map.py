"""ccxt's exceptions mapped onto the platform's hierarchy, keeping the exchange's own words.

Retryable (the exchange may not have seen the request, or cannot serve it now): network errors,
request timeouts, rate limits, exchange not available, bad or empty responses, clock skew.
Fatal (the exchange answered and retrying the same request cannot help): authentication and
permissions, insufficient funds, invalid orders, unknown orders, bad requests, unsupported
calls.  The order of the checks matters: ccxt's classes form a tree and the most specific match
must win (``RateLimitExceeded`` is a ``NetworkError``, ``OrderNotFound`` an ``InvalidOrder``).
"""

from __future__ import annotations

import json
import re

import ccxt

from cryptoorchestrator.platform.errors import (
    AuthenticationError,
    ExchangeError,
    FatalExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    RateLimitedError,
    RetryableExchangeError,
)

# Most specific first.
_MAP: tuple[tuple[type[BaseException], type[ExchangeError], str], ...] = (
    (ccxt.RateLimitExceeded, RateLimitedError, "rate limited"),
    (ccxt.DDoSProtection, RateLimitedError, "rate limited"),
    (ccxt.RequestTimeout, RetryableExchangeError, "request timed out"),
    (ccxt.OnMaintenance, RetryableExchangeError, "exchange under maintenance"),
    (ccxt.ExchangeNotAvailable, RetryableExchangeError, "exchange not available"),
    (ccxt.InvalidNonce, RetryableExchangeError, "request timestamp rejected (clock skew)"),
    (ccxt.NetworkError, RetryableExchangeError, "network error"),
    (ccxt.BadResponse, RetryableExchangeError, "unreadable answer from the exchange"),
    (ccxt.CancelPending, RetryableExchangeError, "cancel pending"),
    (ccxt.OperationFailed, RetryableExchangeError, "operation failed"),
    (ccxt.PermissionDenied, AuthenticationError, "permission denied"),
    (ccxt.AccountSuspended, AuthenticationError, "account suspended"),
    (ccxt.AuthenticationError, AuthenticationError, "authentication failed"),
    (ccxt.InsufficientFunds, InsufficientFundsError, "insufficient funds"),
    (ccxt.OrderNotFound, OrderNotFoundError, "order not found"),
    (ccxt.InvalidOrder, InvalidOrderError, "order refused"),
    (ccxt.BadSymbol, InvalidOrderError, "unknown symbol"),
    (ccxt.BadRequest, FatalExchangeError, "bad request"),
    (ccxt.NotSupported, FatalExchangeError, "not supported"),
    (ccxt.ExchangeError, FatalExchangeError, "exchange error"),
    (ccxt.BaseError, FatalExchangeError, "exchange error"),
)

_EXCHANGE_PREFIX = re.compile(r"^[a-z0-9]+ ")


def exchange_message(exc: BaseException) -> str:
    """Return the exchange's own words from a ccxt exception.

    ccxt writes ``"<exchange id> <response body>"``; a JSON body's ``msg`` / ``message`` is the
    exchange's text (Binance: ``{"code":-2010,"msg":"Account has insufficient balance..."}``).
    """
    text = str(exc).strip()
    body = _EXCHANGE_PREFIX.sub("", text, count=1)
    start = body.find("{")
    if start >= 0:
        try:
            payload = json.loads(body[start:])
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            for key in ("msg", "message", "error"):
                value = payload.get(key)
                if isinstance(value, str) and value:
                    code = payload.get("code")
                    return f"{value} (code {code})" if code is not None else value
    return body or text or type(exc).__name__


def map_ccxt_error(exc: BaseException, *, action: str = "exchange call") -> ExchangeError:
    """Return the platform error for ``exc`` (a ccxt or network exception), message kept.

    Parameters
    ----------
    exc
        What ccxt (or the transport under it) raised.
    action
        What we were doing, for the message (``"create order BTC/USDT"``).

    Returns
    -------
    ExchangeError
        A :class:`RetryableExchangeError` or :class:`FatalExchangeError` subclass whose
        ``exchange_message`` holds the exchange's words; ``__cause__`` is set by the caller's
        ``raise ... from exc``.
    """
    if isinstance(exc, ExchangeError):
        return exc
    message = exchange_message(exc)
    for ccxt_cls, ours, words in _MAP:
        if isinstance(exc, ccxt_cls):
            return ours(f"{action}: {words}: {message}", exchange_message=message)
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return RetryableExchangeError(f"{action}: network error: {message}", exchange_message=None)
    return FatalExchangeError(f"{action}: unexpected {type(exc).__name__}: {message}")


def is_ccxt_error(exc: BaseException) -> bool:
    """Return whether ``exc`` comes from ccxt or the network under it (so it must be mapped)."""
    return isinstance(exc, ccxt.BaseError | TimeoutError | ConnectionError)
