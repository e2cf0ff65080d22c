"""Build ccxt clients, optionally pointed at another root URL (the simulator, a testnet).

One function builds every ccxt client of the platform: the execution clients' async ones, the
candle feed's ``ccxt.pro`` streams, the downloader's sync one, and the clients tests aim at the
exchange simulator.  The rules live here once:

* spot by default; with ``api_url`` spot markets only, no margin pairs, no currencies (a sapi
  call) and no time-difference adjustment, because a simulator or testnet serves spot only and
  checks signed timestamps against the real clock;
* with ``api_url`` every REST root moves to it, keeping the root's path (``/api/v3``,
  ``/sapi/v1``), and with ``ccxt.pro`` every stream root to its ``ws://`` (``wss://``) twin;
* ``api_url`` passes the shape checks of :func:`~cryptoorchestrator.platform.exchange.urls.
  check_api_url` (http(s), no credentials, query or fragment).  Which hosts an account may use
  is the caller's policy: tenants' clients are checked against the operator's allowed hosts
  before they are built and send through a :class:`~cryptoorchestrator.platform.exchange.urls.
  GuardedSession`.

ccxt is imported inside :func:`build_ccxt_client`: importing this module stays cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.urls import UrlPolicy, check_api_url

#: ``sync``: ``ccxt``; ``async``: ``ccxt.async_support``; ``pro``: ``ccxt.pro`` (streams too).
ClientKind = Literal["sync", "async", "pro"]

# ccxt's default leaky bucket holds one token and forgets idle time, so every call waited its
# cost times rateLimit and spun a short sleep loop meanwhile.  A rolling window keeps the same
# average rate (1 s / rateLimit cost units a second) and lets calls under it go at once.  One
# second, not Binance's minute: exchanges that count per second must not see a minute's budget
# in one burst (a history download).
_ROLLING_WINDOW: Mapping[str, Any] = {"algorithm": "rollingWindow", "windowSize": 1_000.0}


def build_ccxt_client(
    exchange_id: str,
    api_url: str | None = None,
    *,
    kind: ClientKind = "async",
    api_key: str | None = None,
    secret: str | None = None,
    password: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout_ms: int = 10_000,
    enable_rate_limit: bool = True,
    rolling_window: bool = True,
) -> Any:
    """Return a ccxt client of ``exchange_id``, every API root moved to ``api_url`` if given.

    Parameters
    ----------
    exchange_id
        ccxt's id (``binance``, ``kraken``...), any case.
    api_url
        Another root for every API URL (``http://127.0.0.1:8765``); None: ccxt's own URLs.
    kind
        Which ccxt flavour: ``sync``, ``async`` (``ccxt.async_support``) or ``pro`` (streams).
    api_key, secret, password
        Credentials; none for a public (market-data) client.
    options
        ccxt options, merged over the spot defaults described in the module docstring.
    timeout_ms
        Timeout of each HTTP request.
    enable_rate_limit
        Switch ccxt's own rate limiter on.
    rolling_window
        Pace with a one-second rolling window instead of ccxt's default leaky bucket.

    Raises
    ------
    InvalidInputError
        If this flavour of ccxt does not know ``exchange_id``, or ``api_url`` is not a plain
        http(s) URL.
    """
    module = _ccxt_module(kind)
    ex_id = exchange_id.strip().lower()
    klass = getattr(module, ex_id, None) if ex_id in module.exchanges else None
    if klass is None:
        close = difflib.get_close_matches(ex_id, module.exchanges, n=5)
        hint = ", ".join(close) if close else "see ccxt.exchanges, e.g. binance, kraken, okx"
        raise InvalidInputError(
            "exchange", f"ccxt does not know exchange {exchange_id!r}", allowed=hint
        )
    url = None
    if api_url:
        # Shape checks only: the hosts an account may use are its caller's policy.
        url = check_api_url(
            api_url, UrlPolicy(), exchange=ex_id, trusted=True, field_name="api_url"
        )
    config: dict[str, Any] = {
        "timeout": timeout_ms,
        "enableRateLimit": enable_rate_limit,
        "options": {**_spot_options(url), **dict(options or {})},
    }
    if rolling_window:
        config["tokenBucket"] = dict(_ROLLING_WINDOW)
    for key, value in (("apiKey", api_key), ("secret", secret), ("password", password)):
        if value:
            config[key] = value
    client = klass(config)
    if url is not None:
        _point_at(client, url)
    return client


def _ccxt_module(kind: ClientKind) -> ModuleType:
    if kind == "sync":
        import ccxt

        return ccxt
    if kind == "async":
        import ccxt.async_support

        return ccxt.async_support
    if kind == "pro":
        import ccxt.pro

        return ccxt.pro
    raise InvalidInputError("kind", f"unknown ccxt flavour {kind!r}", allowed="sync, async, pro")


def _spot_options(api_url: str | None) -> dict[str, Any]:
    """Return the ccxt options of a client: spot, and spot only at another URL."""
    options: dict[str, Any] = {"defaultType": "spot"}
    if api_url:
        options.update(
            {
                "fetchMarkets": {"types": ["spot"]},
                "fetchMargins": False,
                "fetchCurrencies": False,
                "adjustForTimeDifference": False,
            }
        )
    return options


def _point_at(client: Any, api_url: str) -> None:
    """Move every REST root of ``client`` to ``api_url`` and every stream root to its ws twin."""
    api = client.urls.get("api")
    if isinstance(api, str):
        client.urls["api"] = api_url
        return
    if not isinstance(api, dict):
        return
    streams = api.pop("ws", None)
    _rewrite(api, api_url, stream=False)
    if isinstance(streams, dict):
        scheme, _, rest = api_url.partition("://")
        _rewrite(streams, ("wss" if scheme == "https" else "ws") + "://" + rest, stream=True)
        api["ws"] = streams


def _rewrite(urls: dict[str, Any], root: str, *, stream: bool) -> None:
    """Replace the scheme and host of every URL in ``urls`` (nested too) by ``root``.

    A REST root keeps no trailing slash; a stream root keeps at least ``/`` as its path.
    """
    for name, url in list(urls.items()):
        if isinstance(url, dict):
            _rewrite(url, root, stream=stream)
        elif isinstance(url, str) and "://" in url:
            path = url.split("://", 1)[1].partition("/")[2]
            urls[name] = root + ("/" + path.rstrip("/") if stream else ("/" + path).rstrip("/"))
