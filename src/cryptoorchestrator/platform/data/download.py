"""Download OHLCV candles through ccxt into the Parquet store.

:func:`download_ohlcv` pages through ``exchange.fetch_ohlcv(symbol, timeframe, since, limit)``
with ccxt's own rate limiter switched on, retries transient failures (network errors, timeouts,
HTTP 429, exchange unavailable) with exponential backoff, resumes after the last stored candle,
validates every candle (bad ones go to the quarantine file) and writes each dataset in one
atomic step at its end, so a failed download never touches the data already stored.

ccxt is imported inside the functions (and by the client factory when it builds a client):
importing this module stays cheap.
"""

from __future__ import annotations

import difflib
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.data.store import DatasetKey, OhlcvStore
from cryptoorchestrator.platform.data.times import TimeLike, fmt_ms, to_ms
from cryptoorchestrator.platform.data.validate import Gap, find_gaps, validate_ohlcv
from cryptoorchestrator.platform.errors import (
    ExchangeError,
    InvalidInputError,
    RetryableExchangeError,
)
from cryptoorchestrator.platform.exchange.ccxt_factory import build_ccxt_client
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA
from cryptoorchestrator.platform.model.symbols import normalize_symbol
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms

if TYPE_CHECKING:
    import ccxt

#: Exchanges whose REST base URL :func:`make_exchange` can point elsewhere (the simulator).
API_URL_EXCHANGES: tuple[str, ...] = ("binance",)
DEFAULT_LIMIT = 1000
MAX_BACKOFF_S = 60.0


@dataclass
class DownloadReport:
    """What one dataset's download did."""

    exchange: str
    symbol: str
    timeframe: str
    since: int
    until: int
    rows_added: int = 0
    rows_fetched: int = 0
    requests: int = 0
    retries: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    resumed_from: int | None = None

    def summary(self) -> str:
        """Return the report as one line."""
        resumed = f", resumed after {fmt_ms(self.resumed_from)}" if self.resumed_from else ""
        return (
            f"{self.exchange} {self.symbol} {self.timeframe}: {self.rows_added} rows added "
            f"({fmt_ms(self.since)} .. {fmt_ms(self.until)}{resumed}), {len(self.gaps)} gap(s), "
            f"{self.quarantined} bad row(s) quarantined"
        )


def make_exchange(
    exchange_id: str, *, api_url: str | None = None, timeout_ms: int = 10_000
) -> ccxt.Exchange:
    """Return the downloader's ccxt client (sync, its rate limiter on).

    Parameters
    ----------
    exchange_id
        A ccxt id (``binance``, ``kraken``...).
    api_url
        Base URL of a Binance-compatible server (the exchange simulator,
        ``http://127.0.0.1:8765``): every Binance API root moves below it (``/api/v3/...``) and
        only spot markets are loaded.
    timeout_ms
        Timeout of each HTTP request.

    Raises
    ------
    InvalidInputError
        If ccxt does not know the exchange, or ``api_url`` is given for an exchange other than
        Binance or is not an http(s) URL.
    """
    ex_id = exchange_id.strip().lower()
    if api_url is not None and ex_id not in API_URL_EXCHANGES:
        # The downloader pages klines as Binance serves them; other APIs are not simulated.
        raise InvalidInputError(
            "api_url", f"cannot redirect {ex_id}'s API", allowed=API_URL_EXCHANGES
        )
    return build_ccxt_client(
        exchange_id,
        api_url,
        kind="sync",
        timeout_ms=timeout_ms,
        enable_rate_limit=True,
        # A long download paces at the average rate either way: keep ccxt's default bucket.
        rolling_window=False,
    )


def _transient_errors() -> tuple[type[BaseException], ...]:
    import ccxt

    return (
        ccxt.NetworkError,
        ccxt.RequestTimeout,
        ccxt.RateLimitExceeded,
        ccxt.ExchangeNotAvailable,
    )


def _call_with_retry(
    fn: Callable[[], Any],
    *,
    what: str,
    exchange: Any,
    max_retries: int,
    backoff_s: float,
    sleep: Callable[[float], None],
    on_retry: Callable[[], None] | None = None,
) -> Any:
    import ccxt

    transient = _transient_errors()
    attempt = 0
    while True:
        try:
            return fn()
        except transient as exc:
            if attempt >= max_retries:
                raise RetryableExchangeError(
                    f"{what} failed after {attempt + 1} tries: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                    exchange_message=str(exc)[:500],
                ) from exc
            delay = min(backoff_s * (2**attempt), MAX_BACKOFF_S)
            if isinstance(exc, ccxt.RateLimitExceeded):
                delay = max(delay, _retry_after(exchange))
            attempt += 1
            if on_retry is not None:
                on_retry()
            sleep(delay)
        except ccxt.BadSymbol as exc:
            raise InvalidInputError("symbol", f"{what}: {str(exc)[:200]}") from exc
        except ccxt.BaseError as exc:
            raise ExchangeError(
                f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}",
                exchange_message=str(exc)[:500],
            ) from exc


def _retry_after(exchange: Any) -> float:
    headers = getattr(exchange, "last_response_headers", None) or {}
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            try:
                return min(float(v), MAX_BACKOFF_S)
            except (TypeError, ValueError):
                return 0.0
    return 0.0


def download_ohlcv(
    exchange: str | ccxt.Exchange,
    symbols: str | Sequence[str],
    timeframes: str | Sequence[str],
    start: TimeLike,
    end: TimeLike | None = None,
    *,
    store: OhlcvStore | None = None,
    api_url: str | None = None,
    limit: int | None = None,
    max_retries: int = 5,
    backoff_s: float = 1.0,
    progress: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    now_ms: int | None = None,
) -> list[DownloadReport]:
    """Download candles for every symbol x timeframe into the store and report per dataset.

    Parameters
    ----------
    exchange
        A ccxt id (a client is made by :func:`make_exchange`) or a ready ccxt client.
    symbols, timeframes
        One or several of each; every combination is downloaded.
    start, end
        Range of candle open times; ``end`` (exclusive) defaults to now.  Candles still forming
        are never stored.  When the store already holds candles at or after ``start``, the
        download resumes after the last stored one.
    store
        Target store; defaults to the settings' data_dir.
    api_url
        Base URL of a Binance-compatible server, passed to :func:`make_exchange`.
    limit
        Candles per request (the exchange's maximum by default, 1000 for Binance).
    max_retries, backoff_s
        Transient failures are retried ``max_retries`` times, waiting ``backoff_s * 2**n``
        seconds (at least the server's ``Retry-After`` on HTTP 429), at most 60 s.
    progress
        Show a progress bar (rich) on the terminal.

    Raises
    ------
    InvalidInputError
        Unknown exchange, symbol or timeframe, or ``end`` before ``start``.
    RetryableExchangeError
        The exchange kept failing; datasets finished before it are kept, the failed one is not
        modified.
    """
    symbol_list = [symbols] if isinstance(symbols, str) else list(symbols)
    tf_list = [timeframes] if isinstance(timeframes, str) else list(timeframes)
    if not symbol_list:
        raise InvalidInputError("symbol", "give at least one symbol", allowed="e.g. BTC/USDT")
    if not tf_list:
        raise InvalidInputError("timeframe", "give at least one timeframe", allowed=TIMEFRAMES)
    for tf in tf_list:
        timeframe_to_ms(tf)
    since0 = to_ms(start, field="start")
    until = None if end is None else to_ms(end, field="end")
    if until is not None and until <= since0:
        raise InvalidInputError("end", f"end {fmt_ms(until)} is not after start {fmt_ms(since0)}")
    client = make_exchange(exchange, api_url=api_url) if isinstance(exchange, str) else exchange
    ex_id = str(client.id)
    store = store if store is not None else OhlcvStore()

    retry = {"max_retries": max_retries, "backoff_s": backoff_s, "sleep": sleep, "exchange": client}
    _call_with_retry(client.load_markets, what=f"{ex_id} load_markets", **retry)
    now = now_ms if now_ms is not None else _exchange_now(client, retry)
    if until is None:
        until = now
        if until <= since0:
            raise InvalidInputError("start", f"start {fmt_ms(since0)} is in the future")
    keys = [
        (_check_symbol(client, s), _check_timeframe(client, tf))
        for s in symbol_list
        for tf in tf_list
    ]

    reports: list[DownloadReport] = []
    bar = _Progress(progress)
    try:
        for symbol, tf in keys:
            reports.append(
                _download_one(client, store, symbol, tf, since0, until, now, limit, retry, bar)
            )
    finally:
        bar.close()
    return reports


def _exchange_now(client: Any, retry: dict[str, Any]) -> int:
    """Return the exchange's clock (it decides which candles are closed), else ours."""
    if (getattr(client, "has", None) or {}).get("fetchTime"):
        return int(_call_with_retry(client.fetch_time, what=f"{client.id} fetch_time", **retry))
    return int(time.time() * 1000)


def _check_symbol(client: Any, symbol: str) -> str:
    sym = normalize_symbol(symbol)
    markets = client.markets or {}
    if sym not in markets:
        close = difflib.get_close_matches(sym, list(markets), n=5)
        hint = ", ".join(close) if close else f"one of the {len(markets)} markets of {client.id}"
        raise InvalidInputError("symbol", f"{client.id} has no market {sym}", allowed=hint)
    return sym


def _check_timeframe(client: Any, timeframe: str) -> str:
    offered = getattr(client, "timeframes", None) or {}
    if offered and timeframe not in offered:
        raise InvalidInputError(
            "timeframe",
            f"{client.id} has no {timeframe} candles",
            allowed=[tf for tf in TIMEFRAMES if tf in offered],
        )
    return timeframe


def _download_one(
    client: Any,
    store: OhlcvStore,
    symbol: str,
    timeframe: str,
    since0: int,
    until: int,
    now: int,
    limit: int | None,
    retry: dict[str, Any],
    bar: _Progress,
) -> DownloadReport:
    key = DatasetKey.of(str(client.id), symbol, timeframe)
    tf_ms = key.tf_ms
    since = -(-since0 // tf_ms) * tf_ms  # first whole candle at or after start
    # A candle is closed once its whole period has passed; never store one still forming.
    stop = min(until, now - tf_ms + 1)
    info = store.info(key.exchange, key.symbol, key.timeframe)
    report = DownloadReport(key.exchange, key.symbol, key.timeframe, since, until)
    if info is not None and info.last is not None and info.first is not None:
        if info.first <= since <= info.last:
            since = info.last + tf_ms
            report.resumed_from = info.last
    report.since = since
    task = bar.add(str(key), max(0, (stop - since) // tf_ms))
    rows: list[list[float]] = []
    cursor = since

    def count_retry() -> None:
        report.retries += 1

    while cursor < stop:
        page = _call_with_retry(
            functools.partial(
                client.fetch_ohlcv, symbol, timeframe, since=cursor, limit=limit or DEFAULT_LIMIT
            ),
            what=f"{key} fetch_ohlcv since {fmt_ms(cursor)}",
            on_retry=count_retry,
            **retry,
        )
        report.requests += 1
        fresh = [r for r in page or [] if r[0] is not None and cursor <= r[0] < stop]
        if not fresh:
            break  # nothing more before `stop`: the exchange has no later candles yet
        rows.extend(fresh)
        last = max(int(r[0]) for r in fresh)
        bar.advance(task, (last + tf_ms - cursor) // tf_ms)
        cursor = last + tf_ms
    report.rows_fetched = len(rows)
    if rows:
        table = _rows_to_table(rows)
        # Overlapping pages are normal for some exchanges: keep the first copy of each candle.
        ts = table.column("timestamp").to_numpy()
        _, first_idx = np.unique(ts, return_index=True)
        if len(first_idx) != len(ts):
            table = table.take(pa.array(np.sort(first_idx)))
        checked = validate_ohlcv(table, timeframe)
        result = store.write(key.exchange, key.symbol, key.timeframe, checked.good)
        report.rows_added = result.rows_added
        report.quarantined = store.quarantine(
            key.exchange,
            key.symbol,
            key.timeframe,
            checked.bad,
            source=f"download {client.id}",
        )
        report.quarantine_reasons = checked.reasons()
    # Gaps inside the downloaded period, including the seam with what was stored before.
    lo = report.resumed_from if report.resumed_from is not None else since
    if store.exists(key.exchange, key.symbol, key.timeframe):
        ts_all = (
            store.read(key.exchange, key.symbol, key.timeframe, lo, stop, columns=["timestamp"])
            .column("timestamp")
            .to_numpy()
        )
        report.gaps = find_gaps(ts_all, timeframe)
    return report


def _rows_to_table(rows: Iterable[Sequence[Any]]) -> pa.Table:
    data = list(zip(*[r[:6] for r in rows], strict=True))
    arrays = [pa.array([int(x) for x in data[0]], pa.int64())]
    arrays += [
        pa.array([np.nan if x is None else float(x) for x in col], pa.float64()) for col in data[1:]
    ]
    return pa.Table.from_arrays(arrays, schema=OHLCV_SCHEMA)


class _Progress:
    """A rich progress bar, or nothing when ``enabled`` is false."""

    def __init__(self, enabled: bool) -> None:
        self._p: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._p.start()

    def add(self, name: str, total: int) -> int | None:
        return None if self._p is None else int(self._p.add_task(name, total=total))

    def advance(self, task: int | None, n: int) -> None:
        if self._p is not None and task is not None:
            self._p.advance(task, n)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
