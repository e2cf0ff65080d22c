"""One replayed market: a pair's Binance filters and its candles as seen at a given instant.

Nothing here speaks HTTP: :mod:`cryptoorchestrator.platform.exchange.sim.wire` formats it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.errors import DataError, InvalidInputError
from cryptoorchestrator.platform.exchange.sim.candles import infer_timeframe, read_candles
from cryptoorchestrator.platform.exchange.sim.path import (
    LEG,
    partial_ohlc,
    path_points,
    price_on_path,
)
from cryptoorchestrator.platform.model.ohlcv import OHLCV_COLUMNS
from cryptoorchestrator.platform.model.symbols import normalize_symbol
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms

#: Binance aligns weekly candles on Monday 00:00 UTC; the epoch was a Thursday.
_WEEK_OFFSET_MS = 4 * 86_400_000
#: Synthetic public trades per candle (one at each point of the price path).
TRADES_PER_CANDLE = 4


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
                t = start + (self.tf_ms - 1 if k == 3 else int(k * LEG * self.tf_ms))
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


def best_quotes(market: ReplayMarket, now: int) -> tuple[Decimal, Decimal]:
    """Return the best bid and ask at ``now``: the traded price floored to the tick, and a tick up.

    Both are zero before the first candle opens.
    """
    price = market.price(now)
    tick = market.spec.tick_size
    if price is None:
        return Decimal(0), Decimal(0)
    bid = (Decimal(repr(price)) / tick).to_integral_value(rounding="ROUND_FLOOR") * tick
    return bid, bid + tick
