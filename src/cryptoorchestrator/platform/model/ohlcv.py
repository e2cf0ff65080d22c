"""The one OHLCV schema used by the store, the engine, the API and the exchange simulator."""

from __future__ import annotations

import pyarrow as pa

#: Column order of every OHLCV table; timestamp is the candle's open time, ms since epoch, UTC.
OHLCV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")

OHLCV_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
    ]
)

#: Schema metadata keys naming the dataset of a table of bars (``co.load_ohlcv`` sets them).
DATASET_META: dict[str, bytes] = {
    "exchange": b"cryptoorch.exchange",
    "symbol": b"cryptoorch.symbol",
    "timeframe": b"cryptoorch.timeframe",
}
