"""Resample OHLCV bars to a longer timeframe (1m -> 5m, 1h, 1d, ...)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.data.validate import grid_offset_ms
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms


def resample_ohlcv(
    table: pa.Table,
    source: str,
    target: str,
    *,
    drop_partial: bool = True,
) -> pa.Table:
    """Aggregate bars of timeframe ``source`` into candles of the longer ``target``.

    Each target candle takes the first open, the highest high, the lowest low, the last close
    and the summed volume of the source bars that open inside it.  Candles with no source bars
    (exchange outages) are absent, not invented.

    Parameters
    ----------
    table
        Sorted bars with :data:`OHLCV_SCHEMA` of timeframe ``source``.
    source, target
        Timeframes; ``target`` must be a whole multiple of ``source``.
    drop_partial
        Drop the first and last candle when the data does not cover their whole period (the
        last one is usually still forming; the first starts mid-candle).  Interior candles
        with missing source bars are kept: the bars that exist are all the exchange traded.

    Raises
    ------
    InvalidInputError
        If ``target`` is not a longer whole multiple of ``source``.
    """
    src_ms = timeframe_to_ms(source, field="source")
    dst_ms = timeframe_to_ms(target, field="target")
    longer = [tf for tf in TIMEFRAMES if (m := timeframe_to_ms(tf)) > src_ms and m % src_ms == 0]
    if dst_ms <= src_ms or dst_ms % src_ms:
        raise InvalidInputError("target", f"cannot resample {source} to {target}", allowed=longer)
    if table.num_rows == 0:
        return OHLCV_SCHEMA.empty_table()
    ts = np.asarray(table.column("timestamp").to_numpy(), dtype=np.int64)
    if np.any(np.diff(ts) <= 0):
        raise InvalidInputError("table", "timestamps must be strictly increasing")
    o, h, lo, c, v = (
        np.asarray(table.column(k).to_numpy(), dtype=np.float64)
        for k in ("open", "high", "low", "close", "volume")
    )
    off = grid_offset_ms(target)
    bucket = (ts - off) // dst_ms
    starts = np.concatenate(([0], np.nonzero(np.diff(bucket))[0] + 1))
    ends = np.concatenate((starts[1:], [len(ts)]))
    out_ts = bucket[starts] * dst_ms + off
    out = {
        "timestamp": out_ts,
        "open": o[starts],
        "high": np.maximum.reduceat(h, starts),
        "low": np.minimum.reduceat(lo, starts),
        "close": c[ends - 1],
        "volume": np.add.reduceat(v, starts),
    }
    keep = np.ones(len(starts), dtype=bool)
    if drop_partial:
        # Covered means the source bars reach both edges of the target candle.
        keep[0] &= ts[starts[0]] == out_ts[0]
        keep[-1] &= ts[ends[-1] - 1] + src_ms == out_ts[-1] + dst_ms
    return pa.Table.from_arrays(
        [pa.array(out[f.name][keep], f.type) for f in OHLCV_SCHEMA], schema=OHLCV_SCHEMA
    )
