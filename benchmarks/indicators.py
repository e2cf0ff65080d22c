"""Time every indicator against TA-Lib on the same bars, in the same process.

Run ``python -m benchmarks.indicators`` (or ``python benchmarks/indicators.py``) from the
repository root. For each function it prints the best time per bar over interleaved repeated runs
(after a JIT warm-up; the best run is the one least disturbed by other processes, the medians
go to the JSON) for our kernel and for TA-Lib, and their ratio (ours / TA-Lib; target <= 1.05).
Batch kernels are compared with calling TA-Lib once per period (speed-up; target >= 2.5x). JIT
compile time and cached-load time are measured in fresh subprocesses with a private numba cache.
Results go to ``benchmarks/results/indicators.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import talib

import cryptoorchestrator.indicators as ci

RESULTS = Path(__file__).resolve().parent / "results" / "indicators.json"

WARM_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
import cryptoorchestrator.indicators as ci
t1 = time.perf_counter()
n = 1000
rng = np.random.default_rng(0)
c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
h = c * 1.01; lo = c * 0.99; v = rng.random(n) * 10
ts = np.arange(n, dtype=np.int64) * 3_600_000
for f in (ci.sma, ci.ema, ci.wma, ci.dema, ci.tema, ci.trima, ci.kama, ci.rsi, ci.roc, ci.mom,
          ci.rolling_max, ci.rolling_min):
    f(c)
ci.macd(c); ci.bbands(c); ci.stochrsi(c); ci.stoch(h, lo, c); ci.willr(h, lo, c)
ci.cci(h, lo, c); ci.adx(h, lo, c); ci.plus_di(h, lo, c); ci.minus_di(h, lo, c)
ci.atr(h, lo, c); ci.natr(h, lo, c); ci.trange(h, lo, c); ci.mfi(h, lo, c, v); ci.obv(c, v)
ci.sar(h, lo); ci.vwap(h, lo, c, v); ci.session_vwap(h, lo, c, v, ts)
ci.crossed_above(c, h); ci.sma_batch(c, [5, 10]); ci.ema_batch(c, [5, 10])
ci.rsi_batch(c, [5, 10])
t2 = time.perf_counter()
print(f"{t1 - t0:.6f} {t2 - t1:.6f}")
"""


def make_bars(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Return a geometric random walk with OHLCV columns and hourly timestamps."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.005, n)) * close
    return {
        "high": close + spread,
        "low": close - spread,
        "close": close,
        "volume": rng.random(n) * 1000.0,
        "ts": np.arange(n, dtype=np.int64) * 3_600_000,
    }


def paired_times(
    ours: Callable[[], Any], ref: Callable[[], Any], repeats: int
) -> tuple[float, float, float, float]:
    """Return (best ours, best ref, median ours, median ref) over interleaved runs.

    Runs alternate so that load from other processes on a shared machine hits both sides alike;
    the best time is the least disturbed one and is what the ratio uses.
    """
    ours()
    ref()
    t_ours = []
    t_ref = []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref()
        t_ref.append(time.perf_counter() - start)
    return min(t_ours), min(t_ref), statistics.median(t_ours), statistics.median(t_ref)


def pairs(b: dict[str, np.ndarray]) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """Return (name, ours, TA-Lib) callables over the bars ``b``."""
    h, lo, c, v = b["high"], b["low"], b["close"], b["volume"]
    return [
        ("sma", lambda: ci.sma(c, 30), lambda: talib.SMA(c, 30)),
        ("ema", lambda: ci.ema(c, 30), lambda: talib.EMA(c, 30)),
        ("wma", lambda: ci.wma(c, 30), lambda: talib.WMA(c, 30)),
        ("dema", lambda: ci.dema(c, 30), lambda: talib.DEMA(c, 30)),
        ("tema", lambda: ci.tema(c, 30), lambda: talib.TEMA(c, 30)),
        ("trima", lambda: ci.trima(c, 30), lambda: talib.TRIMA(c, 30)),
        ("kama", lambda: ci.kama(c, 30), lambda: talib.KAMA(c, 30)),
        ("rsi", lambda: ci.rsi(c, 14), lambda: talib.RSI(c, 14)),
        ("macd", lambda: ci.macd(c), lambda: talib.MACD(c)),
        ("stoch", lambda: ci.stoch(h, lo, c), lambda: talib.STOCH(h, lo, c)),
        ("stochrsi", lambda: ci.stochrsi(c), lambda: talib.STOCHRSI(c)),
        ("bbands", lambda: ci.bbands(c), lambda: talib.BBANDS(c, 20)),
        ("atr", lambda: ci.atr(h, lo, c), lambda: talib.ATR(h, lo, c)),
        ("natr", lambda: ci.natr(h, lo, c), lambda: talib.NATR(h, lo, c)),
        ("trange", lambda: ci.trange(h, lo, c), lambda: talib.TRANGE(h, lo, c)),
        ("adx", lambda: ci.adx(h, lo, c), lambda: talib.ADX(h, lo, c)),
        ("plus_di", lambda: ci.plus_di(h, lo, c), lambda: talib.PLUS_DI(h, lo, c)),
        ("minus_di", lambda: ci.minus_di(h, lo, c), lambda: talib.MINUS_DI(h, lo, c)),
        ("cci", lambda: ci.cci(h, lo, c), lambda: talib.CCI(h, lo, c)),
        ("mfi", lambda: ci.mfi(h, lo, c, v), lambda: talib.MFI(h, lo, c, v)),
        ("obv", lambda: ci.obv(c, v), lambda: talib.OBV(c, v)),
        ("roc", lambda: ci.roc(c), lambda: talib.ROC(c)),
        ("mom", lambda: ci.mom(c), lambda: talib.MOM(c)),
        ("willr", lambda: ci.willr(h, lo, c), lambda: talib.WILLR(h, lo, c)),
        ("sar", lambda: ci.sar(h, lo), lambda: talib.SAR(h, lo)),
        ("rolling_max", lambda: ci.rolling_max(c), lambda: talib.MAX(c)),
        ("rolling_min", lambda: ci.rolling_min(c), lambda: talib.MIN(c)),
    ]


def batches(
    b: dict[str, np.ndarray],
) -> list[tuple[str, list[int], Callable[[], Any], Callable[[], Any], Callable[[], Any]]]:
    """Return (name, periods, ours, ours into a reused buffer, TA-Lib once per period)."""
    c = b["close"]
    ma_periods = list(range(5, 205, 10))
    rsi_periods = list(range(2, 42, 2))
    buf_ma = np.empty((len(ma_periods), c.shape[0]))
    buf_rsi = np.empty((len(rsi_periods), c.shape[0]))
    return [
        (
            "sma_batch",
            ma_periods,
            lambda: ci.sma_batch(c, ma_periods),
            lambda: ci.sma_batch(c, ma_periods, out=buf_ma),
            lambda: [talib.SMA(c, p) for p in ma_periods],
        ),
        (
            "ema_batch",
            ma_periods,
            lambda: ci.ema_batch(c, ma_periods),
            lambda: ci.ema_batch(c, ma_periods, out=buf_ma),
            lambda: [talib.EMA(c, p) for p in ma_periods],
        ),
        (
            "rsi_batch",
            rsi_periods,
            lambda: ci.rsi_batch(c, rsi_periods),
            lambda: ci.rsi_batch(c, rsi_periods, out=buf_rsi),
            lambda: [talib.RSI(c, p) for p in rsi_periods],
        ),
    ]


def jit_times() -> dict[str, float]:
    """Return import, compile and cached-load times measured in fresh subprocesses."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", WARM_SNIPPET],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            runs.append((float(out[0]), float(out[1])))
    return {
        "import_s": runs[0][0],
        "compile_all_s": runs[0][1],
        "cached_import_s": runs[1][0],
        "cached_load_all_s": runs[1][1],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", help="function names to time (default: all)")
    parser.add_argument("--no-jit", action="store_true", help="skip the compile-time runs")
    args = parser.parse_args(argv)

    b = make_bars(args.bars)
    n = args.bars
    rows = []
    print(f"{n:,} bars, best of {args.repeats} interleaved runs after warm-up")
    print(f"{'function':<12} {'ours ns/bar':>12} {'talib ns/bar':>13} {'ratio':>7}")
    for name, ours, ref in pairs(b):
        if args.only and name not in args.only:
            continue
        t_ours, t_ref, med_ours, med_ref = paired_times(ours, ref, args.repeats)
        ratio = t_ours / t_ref
        rows.append(
            {
                "name": name,
                "ours_ns_per_bar": t_ours / n * 1e9,
                "talib_ns_per_bar": t_ref / n * 1e9,
                "ratio": ratio,
                "median_ratio": med_ours / med_ref,
            }
        )
        flag = "" if ratio <= 1.05 else "  > 1.05"
        print(f"{name:<12} {t_ours / n * 1e9:12.2f} {t_ref / n * 1e9:13.2f} {ratio:7.2f}{flag}")

    batch_rows = []
    print()
    print(
        f"{'batch':<12} {'K':>3} {'ours ns/bar/series':>19} {'(out=)':>7} {'talib loop':>11} "
        f"{'speed-up':>9} {'(out=)':>7}"
    )
    for name, periods, ours, ours_out, ref in batches(b):
        if args.only and name not in args.only:
            continue
        k = len(periods)
        reps = max(3, args.repeats // 3)
        t_ours, t_ref, _, _ = paired_times(ours, ref, reps)
        t_out, t_ref2, _, _ = paired_times(ours_out, ref, reps)
        t_ref = min(t_ref, t_ref2)
        batch_rows.append(
            {
                "name": name,
                "periods": periods,
                "ours_ns_per_bar_series": t_ours / n / k * 1e9,
                "ours_out_ns_per_bar_series": t_out / n / k * 1e9,
                "talib_ns_per_bar_series": t_ref / n / k * 1e9,
                "speedup": t_ref / t_ours,
                "speedup_out": t_ref / t_out,
            }
        )
        print(
            f"{name:<12} {k:3d} {t_ours / n / k * 1e9:19.2f} {t_out / n / k * 1e9:7.2f} "
            f"{t_ref / n / k * 1e9:11.2f} {t_ref / t_ours:8.2f}x {t_ref / t_out:6.2f}x"
        )

    jit: dict[str, float] = {}
    if not args.no_jit:
        jit = jit_times()
        print()
        print(
            f"import {jit['import_s']:.2f} s; compile all kernels {jit['compile_all_s']:.2f} s; "
            f"cached: import {jit['cached_import_s']:.2f} s, "
            f"load all {jit['cached_load_all_s']:.2f} s"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bars": n,
                "repeats": args.repeats,
                "functions": rows,
                "batches": batch_rows,
                "jit": jit,
                "talib_version": talib.__version__,
            },
            indent=2,
        )
    )
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
