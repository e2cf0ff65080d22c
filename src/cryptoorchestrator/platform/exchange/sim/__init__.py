"""The exchange simulator: a Binance-compatible spot exchange on loopback replaying real candles.

It answers the Binance spot REST API exactly as ccxt's ``binance`` class calls it (Binance's field
names, string-encoded decimals, error codes), so clients, downloaders and bots are tested against
ccxt's real code with no network.

Starting it
-----------
In a sync test (ccxt's sync client, the CLI, a bot in another thread)::

    from cryptoorchestrator.platform.exchange.ccxt_factory import build_ccxt_client
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    with run_simulator_in_thread({"BTC/USDT": "candles.feather"}, start_ms=t0) as sim:
        ex = build_ccxt_client(
            "binance", sim.base_url, kind="sync", api_key=sim.api_key, secret=sim.api_secret
        )
        ex.load_markets()
        ex.create_order("BTC/USDT", "market", "buy", 0.01)
        sim.advance(3_600_000)          # one hour of simulated time: limit orders may fill

In async code (same loop as the client)::

    sim = ExchangeSimulator({"BTC/USDT": table})
    base_url = await sim.start()        # 127.0.0.1 on a free port
    ex = build_ccxt_client("binance", base_url, api_key=..., secret=...)  # async by default
    ...
    await ex.close(); await sim.stop()

``data`` is a mapping symbol -> candles (a pyarrow table in ``OHLCV_SCHEMA``, or a
feather/CSV/Parquet file), or a single table/file served as ``BTC/USDT``.

Time
----
The simulated clock decides which candles exist: candles that closed before "now" are final, the
one containing "now" is partial (its prices follow the path described in
:mod:`~cryptoorchestrator.platform.exchange.sim.path`), later ones are invisible.

* History (default: no ``start_ms``, ``speed=0``): the clock stands at the end of the data.
* Live feed (``speed > 0``): the clock runs ``speed`` x real time from ``start_ms`` (default: the
  open of candle ``warmup_candles``, so 1,000 candles of history exist).
* Stepped tests: ``speed=0`` and ``start_ms``; move with ``sim.advance(ms)`` / ``sim.set_time(ms)``
  or ``POST /_sim/clock {"advance": ms}`` / ``{"set_time": ms}`` / ``{"speed": x}``.

``GET /api/v3/time`` answers the simulated time.  Signed requests' ``timestamp`` is checked
against the machine's real clock (as Binance checks it against its own), so ccxt must not adjust
for the time difference (``build_ccxt_client`` with an ``api_url`` sets that).

Accounts
--------
Default credentials for local use: API key :data:`DEFAULT_API_KEY`, secret
:data:`DEFAULT_API_SECRET`, starting balance 10,000 USDT.  Pass ``accounts=[SimAccountSpec(...)]``
for others.  Requests signed with any other secret get -1022.

Kline WebSocket stream
----------------------
``ws://<host>:<port>/ws`` (:func:`ws_url_for` derives it from ``base_url``) speaks Binance's spot
market-stream protocol as ``ccxt.pro``'s ``binance`` uses it (``build_ccxt_client(..., kind="pro")``
builds that client).  ccxt connects to ``/ws/<n>`` (``n``: its stream index, ``0``); any path below
``/ws`` is accepted, and a path segment that is a stream name (``/ws/btcusdt@kline_1h``)
subscribes to it as Binance's raw-stream URLs do.  Requests are JSON text frames::

    {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 1}   -> {"result": null, "id": 1}
    {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 2} -> {"result": null, "id": 2}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}          -> {"result": ["btcusdt@kline_1h"], "id": 3}

Errors have Binance's shape, ``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}``
(code 3: not JSON); a SUBSCRIBE naming any stream the simulator cannot serve (not
``<symbol>@kline_<interval>``, unknown symbol, an interval finer than the stored candles or not
Binance's) subscribes to none of its streams.

Events are Binance's kline events, ``{"e": "kline", "E": now, "s": "BTCUSDT", "k": {"t", "T",
"s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}}``, with ``E`` the
simulated time and the prices and volumes of ``k`` exactly those of the same candle's row in
``GET /api/v3/klines`` at that time (one function builds both):

* right after a SUBSCRIBE reply: the stream's current candle (``x`` false while it forms);
* whenever the clock moves (``advance``, ``set_time``, ``POST /_sim/clock``, and with
  ``speed > 0`` a timer in the server's loop that sleeps until the next close): every candle that
  closed since the last event, oldest first, each once with ``x`` true (at most the last 1,000
  per move, a ``/klines`` page), then the forming candle as it is now (``x`` false);
* with ``speed > 0``, the forming candle again every 2 s of real time, as Binance does.

``advance``/``set_time`` may be called from any thread: the events are handed to the server's
loop.  The WebSocket handshake is faulted only when ``path_prefix`` selects it (``"/ws"``), so
REST fault counters are not consumed by a client reconnecting its stream.

Admin endpoints (never faulted, not part of Binance)
----------------------------------------------------
``GET/POST /_sim/clock``, ``GET/POST /_sim/faults`` (see
:mod:`~cryptoorchestrator.platform.exchange.sim.faults`), ``GET /_sim/orders`` (every account's
orders, Binance's order shape plus ``apiKey``), ``GET /_sim/balances``, ``GET /_sim/stats``
(requests served per ``METHOD /path``), ``GET /_sim/ws`` (open stream connections, subscriptions
per stream, kline events pushed) and ``POST /_sim/ws {"drop": true}`` (close every stream
connection with code 1001, as Binance does after 24 h; ``"abort": true`` cuts the TCP
connection instead).

Modules
-------
``server`` (:class:`ExchangeSimulator`: Python API, app, routes, faults, admin endpoints),
``public`` and ``signed`` (Binance's endpoints), ``auth`` (request signing), ``ws`` (kline
streams), ``wire`` (Binance's formats and errors), ``matching`` (the matching engine),
``accounts``, ``market`` (a replayed pair), ``path`` (prices inside a candle), ``candles``
(reading them), ``clock``, ``faults`` and ``thread`` (:func:`run_simulator_in_thread`).
"""

from cryptoorchestrator.platform.exchange.sim.accounts import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    SimAccountSpec,
    parse_balances,
)
from cryptoorchestrator.platform.exchange.sim.candles import read_candles
from cryptoorchestrator.platform.exchange.sim.faults import FaultState, parse_fault_args
from cryptoorchestrator.platform.exchange.sim.market import SymbolSpec, default_spec
from cryptoorchestrator.platform.exchange.sim.path import first_touch
from cryptoorchestrator.platform.exchange.sim.server import ExchangeSimulator
from cryptoorchestrator.platform.exchange.sim.thread import run_simulator_in_thread
from cryptoorchestrator.platform.exchange.sim.ws import ws_url_for

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "ExchangeSimulator",
    "FaultState",
    "SimAccountSpec",
    "SymbolSpec",
    "default_spec",
    "first_touch",
    "parse_balances",
    "parse_fault_args",
    "read_candles",
    "run_simulator_in_thread",
    "ws_url_for",
]
