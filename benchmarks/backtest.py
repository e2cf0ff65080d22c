"""Benchmark: SMA 10/50 cross through ``co.backtest`` against vectorbt's full pipeline.

Both run in this process on the same bars: 1,000,000 random-walk bars, and one year (2021) of
real Binance BTC/USDT 1h candles.  vectorbt's pipeline is what a user writes: two ``MA.run``,
``ma_crossed_above``/``below`` and ``Portfolio.from_signals`` (close fills, same fee, min_size 0
so that it does not stop trading once fees have ground the equity down).  Our side is the public
``co.backtest`` (bar validation, strategy with our indicators, engine, all metrics) with
``fill="close"``.  The orders of both are compared field by field.

Run: ``.venv/bin/python benchmarks/backtest.py [--bars N] [--repeat R]``; writes
``benchmarks/results/backtest.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "candles" / "binance_BTC_USDT-1h.feather"
FEE_BPS = 10.0
INIT_CASH = 1_000_000.0


def _interleaved(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeat: int
) -> tuple[float, float, Any, Any]:
    """Return median times of both, alternating runs so machine load hits both alike."""
    a, b = ours(), theirs()  # warm-up (numba compilation, caches)
    t_a, t_b = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a = ours()
        t1 = time.perf_counter()
        b = theirs()
        t2 = time.perf_counter()
        t_a.append(t1 - t0)
        t_b.append(t2 - t1)
    return statistics.median(t_a), statistics.median(t_b), a, b


def _random_bars(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(0, 0.001, n))
    return {
        "timestamp": np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * (1 + wick),
        "low": np.minimum(open_, close) * (1 - wick),
        "close": close,
        "volume": np.ones(n),
    }


def _real_bars() -> dict[str, np.ndarray] | None:
    if not DATA.exists():
        return None
    import pyarrow.feather as feather

    table = feather.read_table(DATA)
    ts = table.column("date").cast("int64").to_numpy() // 1_000_000
    keep = (ts >= 1_609_459_200_000) & (ts < 1_640_995_200_000)
    out = {"timestamp": ts[keep]}
    for c in ("open", "high", "low", "close", "volume"):
        out[c] = table.column(c).to_numpy()[keep]
    return out


def _case(name: str, bars: dict[str, np.ndarray], timeframe: str, repeat: int) -> dict[str, Any]:
    import vectorbt as vbt

    import cryptoorchestrator as co

    close = bars["close"]

    def ours() -> Any:
        return co.backtest(
            "sma_cross",
            bars,
            {"fast": 10, "slow": 50},
            fee_bps=FEE_BPS,
            fill="close",
            init_cash=INIT_CASH,
            timeframe=timeframe,
        )

    def theirs() -> Any:
        fast = vbt.MA.run(close, 10)
        slow = vbt.MA.run(close, 50)
        entries = fast.ma_crossed_above(slow)
        exits = fast.ma_crossed_below(slow)
        return vbt.Portfolio.from_signals(
            close, entries, exits, fees=FEE_BPS / 1e4, init_cash=INIT_CASH, min_size=0.0
        )

    t_ours, t_vbt, res, pf = _interleaved(ours, theirs, repeat)
    rec = pf.orders.values
    o = res.order_records
    same = (
        len(rec) == len(o)
        and np.array_equal(rec["idx"], o[:, 0].astype(np.int64))
        and np.array_equal(rec["size"], o[:, 3])
        and np.array_equal(rec["price"], o[:, 4])
        and np.array_equal(rec["fees"], o[:, 5])
    )
    n = len(close)
    return {
        "case": name,
        "bars": n,
        "orders": int(len(o)),
        "orders_identical": bool(same),
        "final_equity_ours": float(res.metrics["final_equity"]),
        "final_equity_vectorbt_from_records": float(
            pf.cash().to_numpy()[-1] + pf.assets().to_numpy()[-1] * close[-1]
        ),
        "ours_s": t_ours,
        "vectorbt_s": t_vbt,
        "ours_ns_per_bar": t_ours / n * 1e9,
        "vectorbt_ns_per_bar": t_vbt / n * 1e9,
        "speedup": t_vbt / t_ours,
    }


def main() -> None:
    """Run the cases, print a table and write ``benchmarks/results/backtest.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cases = [_case(f"random walk {args.bars:,} bars", _random_bars(args.bars), "1m", args.repeat)]
    real = _real_bars()
    if real is not None:
        cases.append(_case("binance BTC/USDT 1h, 2021", real, "1h", args.repeat * 3))
    head = (
        f"{'case':34} {'bars':>9} {'orders':>7} {'ours ms':>9} {'vbt ms':>9} "
        f"{'ours ns/bar':>11} {'vbt ns/bar':>10} {'speedup':>8} identical"
    )
    print(head)
    print("-" * len(head))
    for c in cases:
        print(
            f"{c['case']:34} {c['bars']:>9,} {c['orders']:>7,} {c['ours_s'] * 1e3:>9.2f} "
            f"{c['vectorbt_s'] * 1e3:>9.2f} {c['ours_ns_per_bar']:>11.2f} "
            f"{c['vectorbt_ns_per_bar']:>10.2f} {c['speedup']:>7.1f}x {c['orders_identical']}"
        )
    out = ROOT / "benchmarks" / "results" / "backtest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "cases": cases,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
