"""Candles the simulator replays: a table or a feather/CSV/Parquet file, as OHLCV_SCHEMA.

The simulator reads candle files itself, so it depends on nothing but the domain model; the
platform's importers (:mod:`cryptoorchestrator.platform.data.importers`) are for the store, which
keeps rows as the file holds them for validation to judge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.errors import DataError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_COLUMNS, OHLCV_SCHEMA
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms


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
