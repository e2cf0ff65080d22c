"""``Bars``: validated OHLCV columns as numpy arrays, and :func:`as_bars` to build them.

Strategies, the look-ahead checker and the engine all take a :class:`Bars`.  :func:`as_bars`
accepts what users have at hand (a pyarrow table in ``OHLCV_SCHEMA``, a pandas DataFrame such as
freqtrade's with a ``date`` column, a dict of arrays, a 2-D numpy array or a 1-D array of closes)
and validates it once, in one pass: an error names the field, what is allowed and the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.ohlcv import DATASET_META, OHLCV_COLUMNS, OHLCV_SCHEMA
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms
from cryptoorchestrator.platform.model.timestamps import annualisation, timestamps_to_ms
from cryptoorchestrator.platform.strategy import nb

_PRICE_COLUMNS = ("open", "high", "low", "close")


@dataclass(frozen=True, eq=False)
class Bars:
    """Validated OHLCV bars of one symbol: 1-D contiguous arrays of equal length.

    ``timestamp`` is int64 ms (candle open time, UTC), the rest float64.  The arrays may be
    read-only views of the caller's data; nothing here writes into them.
    """

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    symbol: str | None = None
    timeframe: str | None = None

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def slice(self, start: int, stop: int | None = None) -> Bars:
        """Return bars ``[start:stop]`` as views (no copy, no re-validation)."""
        s = slice(start, stop)
        return Bars(
            self.timestamp[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            self.volume[s],
            self.symbol,
            self.timeframe,
        )

    def to_table(self) -> pa.Table:
        """Return the bars as a pyarrow table in ``OHLCV_SCHEMA``."""
        return pa.Table.from_arrays(
            [pa.array(getattr(self, c)) for c in OHLCV_COLUMNS], schema=OHLCV_SCHEMA
        )


def _f64(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"bars.{name}", f"not numeric: {exc}", allowed="float64 numbers"
        ) from exc
    if arr.ndim != 1:
        raise InvalidInputError(
            f"bars.{name}", f"must be 1-D, got shape {arr.shape}", allowed="1-D"
        )
    return arr


def _columns_from(data: Any) -> dict[str, Any]:
    if isinstance(data, pa.Table | pa.RecordBatch):
        cols = {name.lower(): data.column(name) for name in data.column_names}
        out: dict[str, Any] = {}
        for name, col in cols.items():
            if isinstance(col, pa.ChunkedArray) and col.null_count:
                raise InvalidInputError(
                    f"bars.{name}", f"{col.null_count} missing values", allowed="no nulls"
                )
            if name in ("timestamp", "date") and pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
            out[name] = col.to_numpy()
        return out
    if isinstance(data, Mapping):
        return {str(k).lower(): v for k, v in data.items()}
    module = type(data).__module__
    if module.startswith("pandas"):
        import pandas as pd

        df = data
        if isinstance(df, pd.Series):
            return {"close": df.to_numpy()}
        cols = {str(c).lower(): df[c] for c in df.columns}
        out = {}
        for name, series in cols.items():
            if name in ("timestamp", "date") and pd.api.types.is_datetime64_any_dtype(series):
                out[name] = (
                    series.dt.as_unit("ms").astype("int64").to_numpy()
                    if hasattr(series.dt, "as_unit")
                    else (series.astype("int64") // 1_000_000).to_numpy()
                )
            else:
                if series.isna().any():
                    rows = np.flatnonzero(series.isna().to_numpy())
                    raise InvalidInputError(
                        f"bars.{name}",
                        "missing values (NaN)",
                        allowed="finite numbers",
                        rows=rows.tolist(),
                    )
                out[name] = series.to_numpy()
        if "timestamp" not in out and "date" not in out and isinstance(df.index, pd.DatetimeIndex):
            out["timestamp"] = df.index.as_unit("ms").asi8
        return out
    arr = np.asarray(data)
    if arr.ndim == 1:
        return {"close": arr}
    if arr.ndim == 2 and arr.shape[1] in (5, 6):
        names = OHLCV_COLUMNS if arr.shape[1] == 6 else OHLCV_COLUMNS[1:]
        return {name: arr[:, i] for i, name in enumerate(names)}
    raise InvalidInputError(
        "bars",
        f"unsupported input {type(data).__name__} with shape {getattr(arr, 'shape', '?')}",
        allowed="Bars, pyarrow Table, pandas DataFrame, dict of arrays, 1-D closes, "
        "2-D (n, 5|6) array",
    )


def as_bars(
    data: Any,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
) -> Bars:
    """Convert and validate ``data`` into :class:`Bars` (no copy where the input allows).

    Timestamps in seconds, microseconds or nanoseconds are converted to ms (the unit is read
    from their magnitude, see :func:`~cryptoorchestrator.platform.model.timestamps.
    timestamps_to_ms`). Without a ``timestamp`` column (1-D closes, arrays) the ``timeframe`` is
    required and the bars are numbered ``i * timeframe`` from the epoch; a 1-D array is taken as
    closes and used for open, high and low too; missing volume is zero.  A pyarrow table from
    ``co.load_ohlcv`` names its ``symbol`` and ``timeframe`` (schema metadata) unless given.

    Raises
    ------
    InvalidInputError
        Missing columns, NaN or non-positive prices, negative volume, high below low, unsorted or
        duplicate timestamps, timestamps that are not dates in any unit, no timestamps and no
        ``timeframe``, or no bars; the message names the column and the first rows.
    """
    if isinstance(data, Bars):
        return data
    if isinstance(data, pa.Table) and data.schema.metadata:
        # bars from co.load_ohlcv name their dataset (DATASET_META)
        meta = data.schema.metadata
        if symbol is None and DATASET_META["symbol"] in meta:
            symbol = meta[DATASET_META["symbol"]].decode()
        if timeframe is None and DATASET_META["timeframe"] in meta:
            timeframe = meta[DATASET_META["timeframe"]].decode()
    cols = _columns_from(data)
    if "date" in cols and "timestamp" not in cols:
        cols["timestamp"] = cols.pop("date")
    if "close" not in cols:
        raise InvalidInputError(
            "bars", f"missing column 'close' (have {sorted(cols)})", allowed=OHLCV_COLUMNS
        )
    close = _f64(cols["close"], "close")
    n = close.shape[0]
    if n == 0:
        raise InvalidInputError("bars", "no bars (empty data)", allowed=">= 1 bar")
    present = [c for c in ("open", "high", "low") if c in cols]
    if present and len(present) < 3:
        missing = [c for c in ("open", "high", "low") if c not in cols]
        raise InvalidInputError("bars", f"missing columns {missing}", allowed=OHLCV_COLUMNS)
    arrays = {c: _f64(cols[c], c) if c in cols else close for c in _PRICE_COLUMNS}
    volume = _f64(cols["volume"], "volume") if "volume" in cols else np.zeros(n)
    if "timestamp" in cols:
        ts = timestamps_to_ms(np.asarray(cols["timestamp"]), field="bars.timestamp")
    elif timeframe is None:
        # Guessing an interval would silently scale every annualised metric (one-minute bars
        # read as hourly ones inflate Sharpe by sqrt(60)).
        raise InvalidInputError(
            "timeframe",
            "the bars have no timestamps, so the bar interval must be given",
            allowed=TIMEFRAMES,
        )
    else:
        ts = np.arange(n, dtype=np.int64) * timeframe_to_ms(timeframe)
    for name, arr in (*arrays.items(), ("volume", volume), ("timestamp", ts)):
        if arr.shape[0] != n:
            raise InvalidInputError(
                f"bars.{name}", f"has {arr.shape[0]} rows, close has {n}", allowed=f"{n} rows"
            )
    rows = np.empty(20, dtype=np.int64)
    problem, count = nb.check_bars_nb(
        ts, arrays["open"], arrays["high"], arrays["low"], arrays["close"], volume, rows
    )
    if problem:
        shown = rows[: min(count, 20)].tolist()
        if problem == nb.BAD_TIMESTAMP_ORDER:
            raise InvalidInputError(
                "bars.timestamp",
                f"{count} timestamps not strictly increasing (unsorted or duplicate)",
                allowed="strictly increasing",
                rows=shown,
            )
        if problem == nb.BAD_PRICE:
            raise InvalidInputError(
                "bars.open/high/low/close",
                f"{count} rows with NaN, infinite or non-positive prices",
                allowed="finite prices > 0",
                rows=shown,
            )
        if problem == nb.BAD_VOLUME:
            raise InvalidInputError(
                "bars.volume",
                f"{count} rows with NaN or negative volume",
                allowed="finite volume >= 0",
                rows=shown,
            )
        raise InvalidInputError(
            "bars.high", f"{count} rows with high below low", allowed="high >= low", rows=shown
        )
    if timeframe is not None:
        annualisation(ts, timeframe)  # a known timeframe that matches the bars' spacing
    return Bars(
        ts,
        arrays["open"],
        arrays["high"],
        arrays["low"],
        arrays["close"],
        volume,
        symbol,
        timeframe,
    )
