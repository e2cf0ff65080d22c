"""Market-data side of the exchange simulator: replayed candles, a simulated clock, symbol filters.

Prices inside a candle follow a fixed, deterministic path through its four prices, so that a
partial candle, the ticker, the order book and limit-order matching all agree with each other and
with the stored candle once it closes:

* a rising candle (close >= open) goes open -> low -> high -> close,
* a falling candle goes open -> high -> low -> close,

each leg taking a third of the candle.  This is the usual "OHLC path" assumption of backtesters;
it never invents a price outside the candle's range.

Nothing here speaks HTTP: :mod:`cryptoorchestrator.platform.exchange.simulator` formats it.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.errors import DataError, InvalidInputError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_COLUMNS, OHLCV_SCHEMA
from cryptoorchestrator.platform.model.symbols import normalize_symbol
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms

#: Fractions of a candle at which the price path reaches its 2nd, 3rd and 4th point.
_LEG = 1.0 / 3.0
#: Binance aligns weekly candles on Monday 00:00 UTC; the epoch was a Thursday.
_WEEK_OFFSET_MS = 4 * 86_400_000
#: Synthetic public trades per candle (one at each point of the price path).
TRADES_PER_CANDLE = 4


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _to_epoch_ms(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Return a timestamp column (timestamps, date strings or epoch numbers) as int64 ms."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        unit_ms = {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[typ.unit]
        raw = column.cast(pa.timestamp(typ.unit)).cast(pa.int64()).to_numpy()
        return (raw * unit_ms if unit_ms < 1 else raw // int(unit_ms)).astype(np.int64)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        import pyarrow.compute as pc

        parsed = pc.strptime(column, format="%Y-%m-%d %H:%M:%S.%f", unit="ms", error_is_null=True)
        if parsed.null_count:
            parsed = pc.cast(column, pa.timestamp("ms"))
        return parsed.cast(pa.int64()).to_numpy().astype(np.int64)
    values = np.asarray(column.to_numpy(), dtype=np.float64)
    if values.size == 0:
        return values.astype(np.int64)
    # Epoch numbers come in s, ms, us or ns; their magnitude tells which (2001..2286 in ms).
    scale = 1.0
    top = float(np.nanmax(np.abs(values)))
    if top < 1e11:
        scale = 1000.0
    elif top > 1e17:
        scale = 1e-6
    elif top > 1e14:
        scale = 1e-3
    return np.round(values * scale).astype(np.int64)


def normalize_ohlcv_table(table: pa.Table, *, source: str = "table") -> pa.Table:
    """Return ``table`` in :data:`OHLCV_SCHEMA`, accepting freqtrade's ``date`` column too.

    Raises
    ------
    DataError
        If a column is missing or timestamps are not strictly increasing.
    """
    names = {name.lower(): name for name in table.column_names}
    ts_name = next(
        (names[n] for n in ("timestamp", "date", "time", "open_time") if n in names), None
    )
    missing = [c for c in OHLCV_COLUMNS[1:] if c not in names]
    if ts_name is None or missing:
        raise DataError(
            f"{source}: not an OHLCV table (columns {table.column_names}; "
            f"need timestamp|date, {', '.join(OHLCV_COLUMNS[1:])})"
        )
    ts = _to_epoch_ms(table.column(ts_name))
    arrays = [pa.array(ts, pa.int64())]
    for col in OHLCV_COLUMNS[1:]:
        arrays.append(table.column(names[col]).cast(pa.float64()).combine_chunks())
    out = pa.Table.from_arrays(arrays, schema=OHLCV_SCHEMA)
    if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
        raise DataError(f"{source}: timestamps are not strictly increasing")
    return out


def read_candles(source: pa.Table | str | Path) -> pa.Table:
    """Return the candles of ``source`` (a table, or a feather/CSV/Parquet file) as OHLCV_SCHEMA.

    Prefers the platform importer (``platform.data.importers.read_ohlcv_file``) when it exists.

    Raises
    ------
    DataError
        If the file is missing, unreadable or not OHLCV.
    """
    if isinstance(source, pa.Table):
        return normalize_ohlcv_table(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"candle file not found: {path}")
    reader: Any = None
    try:
        importers = importlib.import_module("cryptoorchestrator.platform.data.importers")
        reader = getattr(importers, "read_ohlcv_file", None)
    except ImportError:
        reader = None
    if reader is not None:
        result = reader(path)
        table = result if isinstance(result, pa.Table) else getattr(result, "table", result)
        return normalize_ohlcv_table(table, source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".feather", ".arrow", ".ipc"):
            import pyarrow.feather as feather

            table = feather.read_table(path)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif suffix in (".csv", ".txt"):
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
        else:
            raise DataError(f"{path}: unknown candle file type {suffix!r} (feather, parquet, csv)")
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: unreadable candle file ({exc})") from exc
    return normalize_ohlcv_table(table, source=str(path))


def infer_timeframe(ts: np.ndarray) -> str:
    """Return the timeframe name whose length is the most common step between ``ts``."""
    if len(ts) < 2:
        raise DataError("need at least two candles to infer the timeframe")
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    step = int(steps[np.argmax(counts)])
    for name in TIMEFRAMES:
        if timeframe_to_ms(name) == step:
            return name
    raise DataError(f"candle spacing of {step} ms is not a Binance timeframe")


# --------------------------------------------------------------------------------------------
# Symbols and filters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolSpec:
    """A tradable pair and its Binance filters (PRICE_FILTER, LOT_SIZE, NOTIONAL)."""

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    min_price: Decimal = Decimal("0.00000001")
    max_price: Decimal = Decimal("10000000")

    @property
    def base(self) -> str:
        """Return the base asset (``BTC`` of ``BTC/USDT``)."""
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        """Return the quote asset (``USDT`` of ``BTC/USDT``)."""
        return self.symbol.split("/")[1]

    @property
    def market_id(self) -> str:
        """Return Binance's spelling of the pair (``BTCUSDT``)."""
        return self.base + self.quote

    @property
    def price_decimals(self) -> int:
        """Return the number of decimals of the tick size."""
        return max(0, -self.tick_size.normalize().as_tuple().exponent)  # type: ignore[operator]


def default_spec(symbol: str, reference_price: float) -> SymbolSpec:
    """Return Binance-like filters for ``symbol`` trading around ``reference_price``.

    The tick is about a millionth of the price (BTC at 60,000: 0.01) and the lot step is worth
    about a tenth of a quote unit (BTC: 0.00001), as Binance sets them for USDT pairs.
    """
    symbol = normalize_symbol(symbol)
    magnitude = math.floor(math.log10(reference_price)) if reference_price > 0 else 0
    tick = Decimal(1).scaleb(max(-8, magnitude - 6))
    step = Decimal(1).scaleb(max(-8, min(0, -magnitude - 1)))
    return SymbolSpec(
        symbol=symbol,
        tick_size=tick,
        step_size=step,
        min_qty=step,
        max_qty=Decimal("9000"),
        min_notional=Decimal("5"),
    )


# --------------------------------------------------------------------------------------------
# Clock
# --------------------------------------------------------------------------------------------


class SimClock:
    """Simulated exchange time in ms: frozen (``speed == 0``) or running ``speed`` x real time.

    Not thread-safe by itself: the simulator calls it under its lock.
    """

    def __init__(self, start_ms: int, speed: float = 0.0) -> None:
        if speed < 0:
            raise InvalidInputError("speed", "must be >= 0", allowed="0 (frozen) or a multiple")
        self._anchor_sim = int(start_ms)
        self._anchor_wall = time.monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        """Return how many simulated seconds pass per real second (0: frozen)."""
        return self._speed

    def now(self) -> int:
        """Return the current simulated time in ms since the epoch."""
        if self._speed == 0.0:
            return self._anchor_sim
        elapsed = time.monotonic() - self._anchor_wall
        return self._anchor_sim + int(elapsed * 1000.0 * self._speed)

    def set_time(self, ms: int) -> None:
        """Jump to ``ms``; the clock keeps its speed from there."""
        self._anchor_sim = int(ms)
        self._anchor_wall = time.monotonic()

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` (must not be negative)."""
        if ms < 0:
            raise InvalidInputError("advance", "the clock cannot go backwards", allowed=">= 0")
        self.set_time(self.now() + int(ms))

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (0 freezes the clock)."""
        if speed < 0:
            raise InvalidInputError("speed", "must be >= 0", allowed="0 (frozen) or a multiple")
        now = self.now()
        self._speed = float(speed)
        self.set_time(now)


# --------------------------------------------------------------------------------------------
# Price path inside a candle
# --------------------------------------------------------------------------------------------


def path_points(o: float, h: float, lo: float, c: float) -> tuple[float, float, float, float]:
    """Return the four prices the intra-candle path visits, in order."""
    return (o, lo, h, c) if c >= o else (o, h, lo, c)


def price_on_path(o: float, h: float, lo: float, c: float, frac: float) -> float:
    """Return the price at fraction ``frac`` (0..1) of the candle."""
    pts = path_points(o, h, lo, c)
    frac = min(max(frac, 0.0), 1.0)
    leg = min(int(frac / _LEG), 2)
    t = (frac - leg * _LEG) / _LEG
    return pts[leg] + (pts[leg + 1] - pts[leg]) * t


def partial_ohlc(
    o: float, h: float, lo: float, c: float, frac: float
) -> tuple[float, float, float, float]:
    """Return the open/high/low/close seen when a fraction ``frac`` of the candle has passed."""
    if frac >= 1.0:
        return o, h, lo, c
    pts = path_points(o, h, lo, c)
    last = price_on_path(o, h, lo, c, frac)
    visited = [pts[k] for k in range(3) if k * _LEG <= frac] + [last]
    return o, max(visited), min(visited), last


def first_touch(
    o: float, h: float, lo: float, c: float, f0: float, f1: float, price: float, *, buy: bool
) -> float | None:
    """Return the first fraction in ``[f0, f1]`` at which a limit order at ``price`` trades.

    A buy trades when the path is at or below ``price``, a sell when it is at or above.
    """
    if f1 < f0:
        return None

    def hit(p: float) -> bool:
        return p <= price if buy else p >= price

    if hit(price_on_path(o, h, lo, c, f0)):
        return f0
    # The path is linear on each leg and did not trade at the leg's start, so a leg whose end
    # trades is crossed exactly once, at the interpolated point.
    for leg in range(3):
        lo_f, hi_f = max(leg * _LEG, f0), min((leg + 1) * _LEG, f1)
        if lo_f > hi_f:
            continue
        p_a, p_b = price_on_path(o, h, lo, c, lo_f), price_on_path(o, h, lo, c, hi_f)
        if hit(p_b):
            if p_b == p_a:
                return lo_f
            t = min(max((price - p_a) / (p_b - p_a), 0.0), 1.0)
            return lo_f + (hi_f - lo_f) * t
    return None


# --------------------------------------------------------------------------------------------
# One replayed market
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One candle as seen at some instant (``closed`` False for the current, partial one)."""

    index: int
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool


class ReplayMarket:
    """Candles of one symbol as numpy arrays, with what is visible at a given instant."""

    def __init__(self, spec: SymbolSpec, table: pa.Table, timeframe: str | None = None) -> None:
        self.spec = spec
        self.ts = np.ascontiguousarray(table.column("timestamp").to_numpy(), dtype=np.int64)
        if len(self.ts) == 0:
            raise DataError(f"{spec.symbol}: no candles to replay")
        cols = {c: table.column(c).to_numpy().astype(np.float64) for c in OHLCV_COLUMNS[1:]}
        self.o, self.h, self.l, self.c, self.v = (
            cols["open"],
            cols["high"],
            cols["low"],
            cols["close"],
            cols["volume"],
        )
        self.timeframe = timeframe or infer_timeframe(self.ts)
        self.tf_ms = timeframe_to_ms(self.timeframe)

    @property
    def first_ms(self) -> int:
        """Return the open time of the first candle."""
        return int(self.ts[0])

    @property
    def end_ms(self) -> int:
        """Return the close time (exclusive) of the last candle."""
        return int(self.ts[-1]) + self.tf_ms

    def visible_count(self, now: int) -> int:
        """Return how many candles have opened at or before ``now``."""
        return int(np.searchsorted(self.ts, now, side="right"))

    def bar(self, i: int, now: int) -> Bar:
        """Return candle ``i`` as seen at ``now`` (partial while it is still open)."""
        start = int(self.ts[i])
        frac = (now - start) / self.tf_ms
        o, h, lo, c, v = (
            float(self.o[i]),
            float(self.h[i]),
            float(self.l[i]),
            float(self.c[i]),
            float(self.v[i]),
        )
        if frac >= 1.0:
            return Bar(i, start, o, h, lo, c, v, True)
        po, ph, pl, pc = partial_ohlc(o, h, lo, c, frac)
        return Bar(i, start, po, ph, pl, pc, v * max(frac, 0.0), False)

    def price(self, now: int) -> float | None:
        """Return the traded price at ``now``; None before the first candle opens."""
        n = self.visible_count(now)
        if n == 0:
            return None
        i = n - 1
        frac = (now - int(self.ts[i])) / self.tf_ms
        if frac >= 1.0:
            return float(self.c[i])
        return price_on_path(
            float(self.o[i]), float(self.h[i]), float(self.l[i]), float(self.c[i]), frac
        )

    def bars_between(self, lo: int, hi: int, now: int) -> list[Bar]:
        """Return candles ``lo``..``hi - 1`` as seen at ``now``."""
        return [self.bar(i, now) for i in range(max(lo, 0), hi)]

    def klines(
        self,
        interval_ms: int,
        now: int,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
    ) -> list[Bar]:
        """Return the candles of ``interval_ms`` that Binance's /klines would show at ``now``.

        With ``start``: the first ``limit`` candles opening at or after it; otherwise the last
        ``limit`` candles opening at or before ``end`` (default: now).  Intervals longer than the
        stored timeframe are aggregated on the fly (weeks start on Monday like Binance's).
        """
        if interval_ms % self.tf_ms:
            raise InvalidInputError("interval", "not a multiple of the stored timeframe")
        ratio = interval_ms // self.tf_ms
        offset = _WEEK_OFFSET_MS if interval_ms == 604_800_000 else 0
        visible = self.visible_count(now)
        if end is not None:
            visible = min(visible, int(np.searchsorted(self.ts, end + interval_ms, "left")))
        if start is not None:
            bucket0 = (start - offset) // interval_ms * interval_ms + offset
            lo = int(np.searchsorted(self.ts, bucket0, "left"))
            hi = min(visible, lo + (limit + 1) * ratio)
        else:
            hi = visible
            lo = max(0, hi - (limit + 1) * ratio)
        bars = self.bars_between(lo, hi, now)
        if ratio > 1:
            bars = _aggregate(bars, interval_ms, offset, now)
        if start is not None:
            bars = [b for b in bars if b.open_time >= start]
        if end is not None:
            bars = [b for b in bars if b.open_time <= end]
        return bars[:limit] if start is not None else bars[-limit:]

    def window(self, start: int, now: int) -> list[Bar]:
        """Return the candles opening in ``[start, now]`` as seen at ``now``."""
        lo = int(np.searchsorted(self.ts, start, "left"))
        return self.bars_between(lo, self.visible_count(now), now)

    def public_trades(
        self, now: int, *, first_candle: int, last_candle: int
    ) -> list[dict[str, Any]]:
        """Return the synthetic public trades of candles ``first..last - 1`` up to ``now``.

        Each candle trades once at each point of its price path; ids are
        ``candle * TRADES_PER_CANDLE + k`` so they stay stable as the clock moves.
        """
        out: list[dict[str, Any]] = []
        step = float(self.spec.step_size)
        for i in range(max(first_candle, 0), min(last_candle, len(self.ts))):
            start = int(self.ts[i])
            pts = path_points(
                float(self.o[i]), float(self.h[i]), float(self.l[i]), float(self.c[i])
            )
            qty = max(step, math.floor(float(self.v[i]) / TRADES_PER_CANDLE / step) * step)
            prev = pts[0]
            for k in range(TRADES_PER_CANDLE):
                t = start + (self.tf_ms - 1 if k == 3 else int(k * _LEG * self.tf_ms))
                if t > now:
                    return out
                price = pts[k]
                out.append(
                    {
                        "id": i * TRADES_PER_CANDLE + k,
                        "price": price,
                        "qty": qty,
                        "time": t,
                        "isBuyerMaker": price < prev,
                    }
                )
                prev = price
        return out


def _aggregate(bars: list[Bar], interval_ms: int, offset: int, now: int) -> list[Bar]:
    """Group base candles into ``interval_ms`` buckets with OHLCV aggregation."""
    out: list[Bar] = []
    cur: list[Bar] = []
    cur_key: int | None = None

    def flush() -> None:
        if not cur:
            return
        key = cur_key if cur_key is not None else 0
        out.append(
            Bar(
                index=cur[0].index,
                open_time=key,
                open=cur[0].open,
                high=max(b.high for b in cur),
                low=min(b.low for b in cur),
                close=cur[-1].close,
                volume=sum(b.volume for b in cur),
                closed=key + interval_ms <= now,
            )
        )

    for b in bars:
        key = (b.open_time - offset) // interval_ms * interval_ms + offset
        if key != cur_key:
            flush()
            cur = []
            cur_key = key
        cur.append(b)
    flush()
    return out


def build_markets(
    data: Mapping[str, pa.Table | str | Path],
    *,
    timeframe: str | None = None,
    specs: Mapping[str, SymbolSpec] | None = None,
) -> dict[str, ReplayMarket]:
    """Return one :class:`ReplayMarket` per symbol, keyed by Binance market id (``BTCUSDT``)."""
    if not data:
        raise InvalidInputError("data", "the simulator needs at least one symbol's candles")
    markets: dict[str, ReplayMarket] = {}
    specs = {normalize_symbol(k): v for k, v in (specs or {}).items()}
    for raw_symbol, source in data.items():
        symbol = normalize_symbol(raw_symbol)
        table = read_candles(source)
        if table.num_rows == 0:
            raise DataError(f"{symbol}: no candles to replay")
        closes = table.column("close").to_numpy()
        spec = specs.get(symbol) or default_spec(symbol, float(np.median(closes)))
        market = ReplayMarket(spec, table, timeframe)
        markets[spec.market_id] = market
    return markets
