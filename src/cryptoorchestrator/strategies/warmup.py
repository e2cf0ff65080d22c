"""Compile the numba kernels ahead of the first request, with progress.

numba compiles a kernel the first time it is called with a new argument type and stores the
machine code next to its source file (``cache=True``).  Without a warm-up, the first backtest a
newcomer runs, and the first tests of a fresh clone, pay for that compilation.  :func:`warm_up`
calls every indicator, every built-in strategy's backtest (long-only, with shorts and with every
kind of stop, on one and on several symbols), an optimizer batch and the look-ahead check on a
few hundred synthetic bars, so every kernel the platform calls is compiled (or loaded from the
cache) once, here, with a progress line per step.

``python -m cryptoorchestrator.strategies.warmup`` (also ``cryptoorch warmup``) runs it;
``scripts/bootstrap.sh`` does so after installing.  ``--jobs 2`` spreads the steps over two
processes: compilation is single-threaded, and each process writes what it compiled to the
shared cache.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from typing import Any, TextIO

import numpy as np

N_BARS = 400

Step = tuple[str, Callable[[], object]]


def _bars(n: int = N_BARS, seed: int = 7) -> dict[str, np.ndarray]:
    """Return ``n`` hourly OHLCV bars of a random walk (prices on a 0.01 tick)."""
    rng = np.random.default_rng(seed)
    close = np.round(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n))), 2)
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.004, (2, n))) * close
    return {
        "timestamp": 1_600_000_000_000 + 3_600_000 * np.arange(n, dtype=np.int64),
        "open": open_,
        "high": np.round(np.maximum(open_, close) + wick[0], 2),
        "low": np.round(np.minimum(open_, close) - wick[1], 2),
        "close": close,
        "volume": rng.uniform(1.0, 10.0, n),
    }


_INPUTS = ("high", "low", "close", "volume", "real", "a", "b", "timestamps")


def _indicator_call(name: str, fn: Callable[..., Any], bars: dict[str, np.ndarray]) -> Any:
    args: list[Any] = []
    for param in inspect.signature(fn).parameters:
        if param not in _INPUTS:
            break
        source = {"real": "close", "a": "close", "b": "open", "timestamps": "timestamp"}
        args.append(bars[source.get(param, param)])
    if name.endswith("_batch"):
        return fn(bars["close"], np.array([5, 10, 20], dtype=np.int64))
    if name == "ma":
        return [fn(bars["close"], 10, matype=m) for m in range(7)]
    return fn(*args)


def indicator_steps() -> list[Step]:
    """Return one step per public indicator function."""
    from cryptoorchestrator import indicators

    bars = _bars()
    names = [n for n in indicators.__all__ if n != "IndicatorInputError"]
    return [
        (f"indicator {name}", partial(_indicator_call, name, getattr(indicators, name), bars))
        for name in names
    ]


_STOPS: tuple[dict[str, float], ...] = (
    {},
    {"stop_loss": 0.02},
    {"stop_loss": 0.02, "take_profit": 0.03},
    {"trailing_stop": 0.02},
)


def _backtest_all(name: str) -> None:
    from cryptoorchestrator.strategies.sdk import backtest

    bars = _bars()
    multi = {"BTC/USDT": bars, "ETH/USDT": _bars(seed=8)}
    for stops in _STOPS:
        for short in (False, True):
            backtest(name, bars, timeframe="1h", allow_short=short, **stops)  # type: ignore[arg-type]
            backtest(name, bars, timeframe="1h", allow_short=short, price_tick=0.01, **stops)  # type: ignore[arg-type]
        backtest(name, multi, timeframe="1h", **stops)  # type: ignore[arg-type]


def _optimize(name: str) -> None:
    from cryptoorchestrator.platform.backtest.engine import SimConfig
    from cryptoorchestrator.platform.optimize.objective import Objective
    from cryptoorchestrator.platform.optimize.trials import TrialConfig, bars_to_arrays, run_trials
    from cryptoorchestrator.strategies.registry import get_strategy

    strategy = get_strategy(name)
    arrays = bars_to_arrays(_bars(), timeframe="1h")
    for column in arrays:
        column.flags.writeable = False  # as a Ray worker receives them from the object store
    config = TrialConfig(SimConfig(), 24 * 365.0, Objective("sharpe"))
    run_trials([strategy.defaults(), strategy.defaults()], arrays, strategy, config)


def _lookahead() -> None:
    from cryptoorchestrator.strategies.sdk import check_lookahead

    check_lookahead("sma_cross", _bars(), params={"fast": 5, "slow": 20}, timeframe="1h")


def strategy_steps() -> list[Step]:
    """Return the backtest and optimizer steps of every built-in strategy, and the check."""
    from cryptoorchestrator.strategies.registry import list_strategies

    steps: list[Step] = []
    for name in list_strategies():
        steps.append((f"backtest {name}", partial(_backtest_all, name)))
        steps.append((f"optimizer trial {name}", partial(_optimize, name)))
    steps.append(("look-ahead check", _lookahead))
    return steps


def all_steps() -> list[Step]:
    """Return every warm-up step, indicators first."""
    return indicator_steps() + strategy_steps()


def _run_step(index: int) -> tuple[str, float]:
    label, step = all_steps()[index]
    t0 = time.perf_counter()
    step()
    return label, time.perf_counter() - t0


def _progress(items: Iterator[tuple[str, float]], total: int, stream: TextIO) -> None:
    # A redrawn bar on a terminal; one line per step in a log (CI, docker build).
    start = time.perf_counter()
    tty = stream.isatty()
    width = 30
    for k, (label, _) in enumerate(items, 1):
        filled = width * k // total
        line = f"  compiling kernels [{'#' * filled}{'.' * (width - filled)}] {k}/{total} {label}"
        stream.write(f"\r{line[:100]:<100}" if tty else f"{line}\n")
        stream.flush()
    done = f"  compiled {total} kernel groups in {time.perf_counter() - start:.0f} s"
    stream.write(f"\r{done:<100}\n" if tty else f"{done}\n")


def warm_up(jobs: int = 1, stream: TextIO | None = None) -> int:
    """Compile (or load from numba's cache) every kernel the platform calls; return the steps run.

    Parameters
    ----------
    jobs
        Processes to compile in (each compiles a share of the steps).
    stream
        Where progress goes (default ``sys.stderr``); ``None`` output is not possible, pass
        ``io.StringIO()`` to silence it.
    """
    out = sys.stderr if stream is None else stream
    total = len(all_steps())
    if jobs <= 1:

        def serial() -> Iterator[tuple[str, float]]:
            for label, step in all_steps():
                t0 = time.perf_counter()
                step()
                yield label, time.perf_counter() - t0

        _progress(serial(), total, out)
        return total
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_step, i) for i in range(total)]
        _progress((f.result() for f in as_completed(futures)), total, out)
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the warm-up from the command line."""
    ap = argparse.ArgumentParser(description="Compile the numba kernels into numba's cache.")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    warm_up(max(1, args.jobs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
