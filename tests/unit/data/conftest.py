"""Helpers for the market-data tests: small synthetic bar tables on the timeframe grid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.data.importers import read_ohlcv_file
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

HOUR = 3_600_000
T2021 = 1_609_459_200_000  # 2021-01-01 00:00 UTC


def _make_bars(n: int, *, start: int = T2021, tf_ms: int = HOUR, seed: int = 0) -> pa.Table:
    """Return ``n`` consistent random-walk bars starting at ``start``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, n))
    vol = rng.uniform(1, 10, n)
    ts = start + tf_ms * np.arange(n, dtype=np.int64)
    return pa.Table.from_arrays(
        [pa.array(ts), *(pa.array(x) for x in (open_, high, low, close, vol))],
        schema=OHLCV_SCHEMA,
    )


@pytest.fixture(scope="session")
def make_bars() -> Callable[..., pa.Table]:
    """Return a factory ``make_bars(n, start=..., tf_ms=..., seed=...)`` of synthetic bars."""
    return _make_bars


@pytest.fixture(scope="session")
def binance_1h(shared_data: Path) -> pa.Table:
    """The real Binance BTC/USDT 1h candles (58,419 rows, 28 gaps)."""
    return read_ohlcv_file(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
