"""Benchmark: load 1M 1m bars from the OHLCV store vs pandas/pyarrow reading one Parquet file.

Run with ``.venv/bin/python -m benchmarks.data`` (or ``python benchmarks/data.py``).  The bars are
the real FTX BTC-PERP 1m candles from ../shared/data tiled forward in time to 1,000,000 rows
(prices repeat; only the reading speed matters here).  Prints a table and writes
``benchmarks/results/data.json``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cryptoorchestrator.platform.data.importers import read_ohlcv_file
from cryptoorchestrator.platform.data.store import OhlcvStore, load_ohlcv
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
N = 1_000_000
REPEAT = 7


def _bars() -> pa.Table:
    src = read_ohlcv_file(SHARED / "candles" / "ftx_BTC-PERP-1m_2022-01.csv").cast(OHLCV_SCHEMA)
    reps = -(-N // src.num_rows)
    cols = {c: np.tile(src.column(c).to_numpy(), reps)[:N] for c in src.column_names[1:]}
    ts = src.column("timestamp")[0].as_py() + 60_000 * np.arange(N, dtype=np.int64)
    return pa.Table.from_arrays(
        [pa.array(ts), *(pa.array(cols[c]) for c in cols)], schema=OHLCV_SCHEMA
    )


def _best(fn: Callable[[], Any]) -> tuple[float, float]:
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    """Run the benchmark, print the table and write the JSON results."""
    bars = _bars()
    with tempfile.TemporaryDirectory() as tmp:
        store = OhlcvStore(tmp)
        t0 = time.perf_counter()
        store.write("ftx", "BTC/USD", "1m", bars)
        write_s = time.perf_counter() - t0
        single = Path(tmp) / "single.parquet"
        pq.write_table(bars, single)
        first = int(bars.column("timestamp")[0].as_py())
        month = first + 30 * 86_400_000
        cases: dict[str, Callable[[], Any]] = {
            "load_ohlcv, all 1M rows": lambda: load_ohlcv("ftx", "BTC/USD", "1m", data_dir=tmp),
            "pandas.read_parquet, 1 file": lambda: pd.read_parquet(single),
            "pyarrow.parquet.read_table, 1 file": lambda: pq.read_table(single),
            "load_ohlcv, one month (43k rows)": lambda: load_ohlcv(
                "ftx", "BTC/USD", "1m", first, month, data_dir=tmp
            ),
            "pandas.read_parquet + filter, one month": lambda: pd.read_parquet(
                single, filters=[("timestamp", ">=", first), ("timestamp", "<", month)]
            ),
        }
        results = {name: _best(fn) for name, fn in cases.items()}
    base = results["pandas.read_parquet, 1 file"][0]
    print(f"rows: {N:,}; store write (atomic, 2 yearly partitions): {write_s * 1000:.0f} ms")
    print(f"{'case':45s} {'best ms':>9s} {'median ms':>10s} {'vs pandas':>10s}")
    for name, (best, med) in results.items():
        print(f"{name:45s} {best * 1000:9.1f} {med * 1000:10.1f} {best / base:9.2f}x")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "rows": N,
        "repeat": REPEAT,
        "store_write_s": write_s,
        "cases": {k: {"best_s": b, "median_s": m} for k, (b, m) in results.items()},
    }
    (out / "data.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
