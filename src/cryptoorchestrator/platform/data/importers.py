"""Read OHLCV files: CSV, Parquet, freqtrade feather and freqtrade JSON.

Every reader returns a table with the OHLCV columns (timestamp int64 ms UTC, prices and volume
float64) exactly as the file holds them: rows are neither dropped, sorted nor repaired here;
:func:`~cryptoorchestrator.platform.data.validate.validate_ohlcv` decides what is bad.
Missing values become NaN so that validation can quarantine them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cryptoorchestrator.platform.errors import DataError
from cryptoorchestrator.platform.model.ohlcv import OHLCV_COLUMNS

#: File suffixes :func:`read_ohlcv_file` understands.
SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq", ".feather", ".arrow", ".json")

_TIME_NAMES = ("timestamp", "date", "time", "datetime", "open_time")
_LOOSE = pa.schema([pa.field(c, pa.float64()) for c in OHLCV_COLUMNS[1:]])


def read_ohlcv_file(path: str | Path) -> pa.Table:
    """Return the bars stored in ``path`` as a table with the OHLCV columns.

    CSV needs a header with ``timestamp`` (or ``date``), open, high, low, close, volume; the
    time may be epoch milliseconds, epoch seconds or ISO 8601 text (UTC unless it has a zone).
    Parquet and feather files may name the time column ``date`` (freqtrade) and store it as
    an Arrow timestamp.  freqtrade JSON is a list of ``[ms, open, high, low, close, volume]``.

    Raises
    ------
    DataError
        One line naming the file and what is wrong: missing, unreadable, unknown format or schema.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            raw = _read_csv(p)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            raw = pq.read_table(p)
        elif suffix in (".feather", ".arrow"):
            import pyarrow.feather as feather

            raw = feather.read_table(p)
        elif suffix == ".json":
            raw = _read_freqtrade_json(p)
        else:
            raise DataError(
                f"{p}: unknown file type {suffix or '(none)'}; allowed: {', '.join(SUFFIXES)}"
            )
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: unreadable {suffix[1:]} file: {first_line}") from None
    return _normalize(raw, p)


def _read_csv(path: Path) -> pa.Table:
    from pyarrow import csv

    # Times are read as text first so that ms, s and ISO spellings can be told apart below.
    names = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip().lower().split(",")
    names = [h.strip().strip('"') for h in header]
    convert = csv.ConvertOptions(
        column_types={n: pa.string() for n in names if n in _TIME_NAMES},
    )
    return csv.read_csv(
        path,
        read_options=csv.ReadOptions(column_names=names, skip_rows=1),
        convert_options=convert,
    )


def _read_freqtrade_json(path: Path) -> pa.Table:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, list) and len(r) >= 6 for r in data):
        raise DataError(
            f"{path}: expected freqtrade JSON, a list of [ms, open, high, low, close, volume]"
        )
    cols: list[Sequence[Any]] = (
        list(zip(*[r[:6] for r in data], strict=True)) if data else [[] for _ in range(6)]
    )
    try:
        arrays = [pa.array([None if x is None else int(x) for x in cols[0]], pa.int64())]
        arrays += [
            pa.array([np.nan if x is None else float(x) for x in col], pa.float64())
            for col in cols[1:]
        ]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: non-numeric value in freqtrade JSON: {exc}") from None
    return pa.Table.from_arrays(arrays, names=list(OHLCV_COLUMNS))


def _time_to_ms(col: pa.ChunkedArray, path: Path) -> pa.Array:
    """Convert a time column (Arrow timestamp, number, or text) to int64 epoch ms."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_timestamp(t):
        return pc.cast(arr.cast(pa.timestamp("ms", tz="UTC")), pa.int64())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = arr.cast(pa.string())
        sample = [s for s in text.slice(0, 50).to_pylist() if s]
        if sample and all(s.strip().lstrip("-").replace(".", "", 1).isdigit() for s in sample):
            return _number_to_ms(pc.cast(text, pa.float64()), path)
        try:
            parsed = _parse_iso(text)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise DataError(f"{path}: cannot read the time column: {exc}") from None
        return pc.cast(parsed, pa.int64())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _number_to_ms(arr, path)
    raise DataError(f"{path}: time column has unsupported type {t}")


def _parse_iso(text: pa.Array) -> pa.Array:
    import pandas as pd

    # pandas reads every ISO 8601 spelling (with or without zone, 'T' or space, fractions).
    values = pd.to_datetime(pd.Series(text.to_pylist(), dtype="object"), utc=True, format="ISO8601")
    return pa.array(values.astype("datetime64[ms, UTC]"), pa.timestamp("ms", tz="UTC"))


def _number_to_ms(arr: pa.Array, path: Path) -> pa.Array:
    vals = np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    if len(finite) and np.nanmedian(np.abs(finite)) < 1e11:
        vals = vals * 1000.0  # epoch seconds (1e11 s is the year 5138; 1e11 ms is 1973)
    mask = ~np.isfinite(vals)
    out = np.where(mask, 0, np.round(vals)).astype(np.int64)
    return pa.array(out, pa.int64(), mask=mask)


def _normalize(raw: pa.Table, path: Path) -> pa.Table:
    lower = {name.lower().strip(): name for name in raw.column_names}
    time_name = next((lower[n] for n in _TIME_NAMES if n in lower), None)
    missing = [c for c in OHLCV_COLUMNS[1:] if c not in lower]
    if time_name is None or missing:
        want = "timestamp (or date), " + ", ".join(OHLCV_COLUMNS[1:])
        raise DataError(
            f"{path}: wrong schema: columns are {', '.join(raw.column_names) or '(none)'}; "
            f"expected {want}"
        )
    arrays: list[pa.Array] = [_time_to_ms(raw.column(time_name), path)]
    for name in OHLCV_COLUMNS[1:]:
        col = raw.column(lower[name])
        try:
            arr = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"{path}: column {name} is not numeric ({col.type})") from None
        arrays.append(pc.fill_null(arr, np.nan))
    return pa.Table.from_arrays(arrays, names=list(OHLCV_COLUMNS))
